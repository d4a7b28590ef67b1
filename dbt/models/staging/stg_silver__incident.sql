-- Incidents from every department, typed and renamed for the marts.
-- Personal data stops here: no reporter_*_hash columns and no address.

with

source as (

    select * from {{ source('silver', 'incident') }}

),

renamed as (

    select
        -- ids
        cast(incident_id as varchar)            as incident_id,
        cast(source as varchar)                 as source,
        cast(source_record_id as varchar)       as source_record_id,

        -- the department's own classification
        cast(source_code as varchar)            as source_code,
        cast(source_label as varchar)           as source_label,

        -- city taxonomy
        cast(domain_code as varchar)            as domain_code,
        cast(category_code as varchar)          as category_code,
        cast(subcategory_code as varchar)       as subcategory_code,
        cast(severity as varchar)               as severity,
        cast(classification_confidence as double) as classification_confidence,

        -- time
        cast(occurred_at_utc as timestamptz)    as occurred_at_utc,
        cast(occurred_at_local as timestamp)    as occurred_at_local,
        cast(occurred_date_local as date)       as occurred_date_local,
        -- dispatch chain (fire/EMS; received also for the hotline), NULL where the department has none
        cast(received_at_utc as timestamptz)    as received_at_utc,
        cast(dispatched_at_utc as timestamptz)  as dispatched_at_utc,
        cast(on_scene_at_utc as timestamptz)    as on_scene_at_utc,

        -- place
        cast(district_code as varchar)          as district_code,
        cast(lon as double)                     as lon,
        cast(lat as double)                     as lat,
        cast(h3_cell as varchar)                as h3_cell,
        cast(location_quality as varchar)       as location_quality,

        -- state
        cast(status as varchar)                 as status,
        cast(updated_at_utc as timestamptz)     as updated_at_utc,

        -- lineage
        {{ silver_lineage_columns() }}

    from source

)

select * from renamed
