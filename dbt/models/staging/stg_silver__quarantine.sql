-- Quarantined records with their reason; the delivered record (record_json) stays in the lake.

with

source as (

    select * from {{ source('silver', 'quarantine') }}

),

renamed as (

    select
        cast(source as varchar)                 as source,
        cast(source_record_id as varchar)       as source_record_id,
        cast(reason as varchar)                 as reason,
        cast(detail as varchar)                 as detail,
        cast(run_id as varchar)                 as run_id,

        -- lineage
        cast(_batch_id as varchar)              as batch_id,
        cast(_source_file as varchar)           as source_file,
        cast(_source_row_number as bigint)      as source_row_number,
        cast(_ingested_at as timestamptz)       as ingested_at_utc

    from source

)

select * from renamed
