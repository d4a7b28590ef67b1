-- IoT device registry, one row per device (silver keeps the newest registry snapshot), typed and renamed.
-- The owner is the operating organisation (e.g. the water bureau), not a person, so it is kept.

with

source as (

    select * from {{ source('silver', 'device') }}

),

renamed as (

    select
        -- ids
        cast(device_id as varchar)              as device_id,
        cast(source as varchar)                 as source,

        -- what it measures
        cast(device_type as varchar)            as device_type,
        cast(model as varchar)                  as model,
        cast(canonical_unit as varchar)         as canonical_unit,
        cast(registry_unit as varchar)          as registry_unit,

        -- place
        cast(district_code as varchar)          as district_code,
        cast(lon as double)                     as lon,
        cast(lat as double)                     as lat,
        cast(h3_cell as varchar)                as h3_cell,
        cast(location_quality as varchar)       as location_quality,

        -- operation
        cast(installed_date as date)            as installed_date,
        cast(clock_skew_seconds as bigint)      as clock_skew_seconds,
        cast(owner as varchar)                  as owner_organisation,
        cast(updated_at_utc as timestamptz)     as updated_at_utc,

        -- lineage
        {{ silver_lineage_columns() }}

    from source

)

select * from renamed
