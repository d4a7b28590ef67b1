-- Daily weather per station and local date.

with

source as (

    select * from {{ source('silver', 'weather_daily') }}

),

renamed as (

    select
        -- ids
        cast(station_id as varchar)             as station_id,
        cast("date" as date)                    as weather_date_local,
        cast(source as varchar)                 as source,

        -- measures
        cast(precip_mm as double)               as precipitation_mm,
        cast(tmax_c as double)                  as temperature_max_c,
        cast(tmin_c as double)                  as temperature_min_c,
        cast(wind_max_ms as double)             as wind_speed_max_ms,

        -- lineage
        cast(updated_at_utc as timestamptz)     as updated_at_utc,
        cast(_batch_id as varchar)              as batch_id,
        cast(_source_file as varchar)           as source_file,
        cast(_source_row_number as bigint)      as source_row_number,
        cast(_ingested_at as timestamptz)       as ingested_at_utc

    from source

)

select * from renamed
