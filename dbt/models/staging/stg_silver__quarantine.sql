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
        {{ silver_lineage_columns() }}

    from source

)

select * from renamed
