-- Hourly aggregates per device from silver: one row per device and UTC hour from its first to its last
-- reading; an hour without a reading is kept as a gap (is_gap, NULL values).

with

source as (

    select * from {{ source('silver', 'device_reading_hourly') }}

),

renamed as (

    select
        cast(device_id as varchar)              as device_id,
        cast(hour_utc as timestamptz)           as hour_utc,
        cast(device_type as varchar)            as device_type,
        cast(unit as varchar)                   as unit,

        cast(reading_count as bigint)           as reading_count,
        cast(value_mean as double)              as value_mean,
        cast(value_min as double)               as value_min,
        cast(value_max as double)               as value_max,
        cast(is_gap as boolean)                 as is_gap,

        cast(district_code as varchar)          as district_code,
        cast(h3_cell as varchar)                as h3_cell,

        -- when silver last inserted or changed the hour (the incremental device marts follow it)
        cast(_changed_at as timestamptz)        as silver_changed_at

    from source

)

select * from renamed
