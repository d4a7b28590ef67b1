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
        {{ silver_lineage_columns() }}

    from source

)

select * from renamed
