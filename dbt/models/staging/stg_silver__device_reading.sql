-- Raw device readings, one per (device_id, seq), value already in the device type's canonical unit and
-- the time corrected for a known clock skew (silver does both).

with

source as (

    select * from {{ source('silver', 'device_reading') }}

),

renamed as (

    select
        -- ids
        cast(device_id as varchar)              as device_id,
        cast(seq as bigint)                     as seq,
        cast(source as varchar)                 as source,
        cast(device_type as varchar)            as device_type,

        -- time
        cast(reading_ts_device as timestamptz)  as reading_ts_device,
        cast(reading_ts_utc as timestamptz)     as reading_ts_utc,
        cast(reading_hour_utc as timestamptz)   as reading_hour_utc,
        cast(clock_corrected as boolean)        as is_clock_corrected,
        cast(received_at_utc as timestamptz)    as received_at_utc,

        -- value
        cast(value as double)                   as value,
        cast(unit as varchar)                   as unit,
        cast(value_reported as double)          as value_reported,
        cast(unit_reported as varchar)          as unit_reported,

        -- place (from the registry)
        cast(district_code as varchar)          as district_code,
        cast(h3_cell as varchar)                as h3_cell,

        -- lineage
        {{ silver_lineage_columns() }},
        -- when silver inserted the reading (the marts' tests check the readings new since their last build)
        cast(_changed_at as timestamptz)        as silver_changed_at

    from source

)

select * from renamed
