-- One row per device and UTC hour, from the device's first to its last reading hour (gaps included):
-- the hour's readings in the canonical unit, the grade its value reaches and the alert grade held with
-- hysteresis (int_device_hourly_alert_state), with the city's local hour and date.

with

alert_state as (

    select * from {{ ref('int_device_hourly_alert_state') }}

),

final as (

    select
        -- keys
        device_id,
        hour_utc,
        timezone('{{ var("city_timezone") }}', hour_utc)                    as hour_local,
        cast(timezone('{{ var("city_timezone") }}', hour_utc) as date)      as date_local,
        hour(timezone('{{ var("city_timezone") }}', hour_utc))              as hour_of_day_local,

        -- device
        device_type,
        measure,
        direction,
        unit,
        district_code,
        h3_cell,

        -- readings
        reading_count,
        value_mean,
        value_min,
        value_max,
        is_gap,

        -- grading
        graded_value,
        value_grade_rank,
        case value_grade_rank
            when 1 then 'blue' when 2 then 'yellow' when 3 then 'orange' when 4 then 'red'
        end                                                                 as value_grade,
        alert_grade_rank,
        case alert_grade_rank
            when 1 then 'blue' when 2 then 'yellow' when 3 then 'orange' when 4 then 'red'
        end                                                                 as alert_grade,
        alert_id

    from alert_state

)

select * from final
