-- The stewards' review queue of codes silver could not map; the example record (delivered JSON) stays in the lake.

with

source as (

    select * from {{ source('silver', 'unmapped_codes') }}

),

renamed as (

    select
        cast(source as varchar)                     as source,
        cast(reason as varchar)                     as reason,
        cast(code as varchar)                       as code,
        cast("count" as bigint)                     as rows_quarantined,
        cast(first_seen as timestamptz)             as first_seen_at_utc,
        cast(last_seen as timestamptz)              as last_seen_at_utc,
        cast(example_source_record_id as varchar)   as example_source_record_id,
        cast(example_detail as varchar)             as example_detail,
        cast(lookup as varchar)                     as lookup,
        cast(mapped_now as varchar)                 as mapped_now,
        cast(review_note as varchar)                as review_note

    from source

)

select * from renamed
