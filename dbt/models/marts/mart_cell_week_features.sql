-- The feature table of the weekly risk models: one row per city grid cell and city-local week
-- (Monday start), every week from the first to the last week of incident data, zeros included.
--
-- No leakage into the history features: lags and trailing means read only the weeks BEFORE the row's
-- week (frames end at 1 PRECEDING; the grid is dense, so n rows back = n weeks back). The row's own
-- week appears in incident_count and the same-week features (neighbours, hazards at week end, alerts,
-- weather), which all describe weeks up to and including the row's week. The label,
-- target_next_week_count, is the NEXT week's count: a model predicts it from this row's features.

{%- set domains = var('feature_incident_domains', ['PS', 'FE', 'TR', 'NH', 'PR', 'UL', 'PH', 'PO']) %}
{%- set grades = ['blue', 'yellow', 'orange', 'red'] %}

with

incidents as (

    select * from {{ ref('int_cell_week_incidents') }}

),

hazards as (

    select * from {{ ref('int_cell_week_hazards') }}

),

device_alerts as (

    select * from {{ ref('int_cell_week_device_alerts') }}

),

weather_daily as (

    select * from {{ ref('stg_silver__weather_daily') }}

),

calendar as (

    select * from {{ ref('dim_date') }}

),

-- city-level weather: each day the mean over the stations that reported it, then per week
city_weather_daily as (

    select
        weather_date_local,
        avg(precipitation_mm)                                   as precipitation_mm,
        avg(temperature_max_c)                                  as temperature_max_c,
        avg(wind_speed_max_ms)                                  as wind_speed_max_ms

    from weather_daily
    group by weather_date_local

),

weather_weekly as (

    select
        {{ local_week_start('weather_date_local') }}            as week_start,
        count(*)                                                as weather_day_count,
        sum(precipitation_mm)                                   as precipitation_mm_total,
        max(temperature_max_c)                                  as temperature_max_c,
        max(wind_speed_max_ms)                                  as wind_speed_max_ms

    from city_weather_daily
    group by 1

),

-- ring-1 neighbours' incidents in the same week (neighbor_cells holds city grid cells only)
neighbor_pairs as (

    select distinct
        h3_cell,
        unnest(neighbor_cells)                                  as neighbor_cell

    from incidents

),

neighbor_counts as (

    select
        neighbor_pairs.h3_cell,
        neighbor_incidents.week_start,
        cast(sum(neighbor_incidents.incident_count) as bigint)  as neighbor_incident_count

    from neighbor_pairs
    inner join incidents as neighbor_incidents
        on neighbor_incidents.h3_cell = neighbor_pairs.neighbor_cell
    group by 1, 2

),

history as (

    select
        incidents.*,
        len(incidents.neighbor_cells)                           as neighbor_cell_count,
        coalesce(neighbor_counts.neighbor_incident_count, 0)    as neighbor_incident_count

    from incidents
    left join neighbor_counts
        on neighbor_counts.h3_cell = incidents.h3_cell
        and neighbor_counts.week_start = incidents.week_start

),

windowed as (

    select
        *,
        -- past weeks only (see the header); NULL where the week lies before the data
        lag(incident_count, 1) over cell_weeks                  as incident_count_lag_1w,
        lag(incident_count, 2) over cell_weeks                  as incident_count_lag_2w,
        lag(incident_count, 4) over cell_weeks                  as incident_count_lag_4w,
        avg(incident_count) over (
            cell_weeks rows between 4 preceding and 1 preceding
        )                                                       as incident_count_mean_past_4w,
        avg(incident_count) over (
            cell_weeks rows between 12 preceding and 1 preceding
        )                                                       as incident_count_mean_past_12w,
        lag(neighbor_incident_count, 1) over cell_weeks         as neighbor_incident_count_lag_1w,

        -- the label: next week's count (NULL on the last week)
        lead(incident_count, 1) over cell_weeks                 as target_next_week_count,
        lead(days_in_data, 1) over cell_weeks = 7               as is_target_week_complete

    from history
    window cell_weeks as (partition by h3_cell order by week_start)

),

final as (

    select
        -- keys
        windowed.h3_cell,
        windowed.district_code,
        windowed.week_start,
        windowed.week_end,

        -- coverage
        windowed.days_in_data,
        windowed.days_in_data = 7                               as is_complete_week,
        windowed.weeks_of_history,

        -- incidents of the week
        windowed.incident_count,
        {%- for domain in domains %}
        windowed.incident_count_{{ domain | lower }},
        {%- endfor %}

        -- history (past weeks only)
        windowed.incident_count_lag_1w,
        windowed.incident_count_lag_2w,
        windowed.incident_count_lag_4w,
        windowed.incident_count_mean_past_4w,
        windowed.incident_count_mean_past_12w,

        -- neighbourhood
        windowed.neighbor_cell_count,
        windowed.neighbor_incident_count,
        windowed.neighbor_incident_count_lag_1w,

        -- hazards at the week's end
        coalesce(hazards.open_hazard_count, 0)                  as open_hazard_count,
        coalesce(hazards.overdue_open_hazard_count, 0)          as overdue_open_hazard_count,
        coalesce(hazards.open_major_hazard_count, 0)            as open_major_hazard_count,

        -- IoT device alerts
        coalesce(device_alerts.device_count, 0)                 as device_count,
        coalesce(device_alerts.device_alert_episodes_started, 0) as device_alert_episodes_started,
        {%- for grade in grades %}
        coalesce(device_alerts.device_alert_episodes_peak_{{ grade }}, 0)
                                                                as device_alert_episodes_peak_{{ grade }},
        {%- endfor %}
        coalesce(device_alerts.device_alert_hours, 0)           as device_alert_hours,

        -- city weather of the week
        coalesce(weather_weekly.weather_day_count, 0)           as weather_day_count,
        weather_weekly.precipitation_mm_total,
        weather_weekly.temperature_max_c,
        weather_weekly.wind_speed_max_ms,

        -- calendar (ISO week; the month of the week's Thursday, which holds most of its days)
        calendar.iso_year,
        calendar.iso_week                                       as week_of_year,
        calendar.month,

        -- LABEL, not a feature
        windowed.target_next_week_count,
        windowed.is_target_week_complete

    from windowed
    left join hazards
        on hazards.h3_cell = windowed.h3_cell
        and hazards.week_start = windowed.week_start
    left join device_alerts
        on device_alerts.h3_cell = windowed.h3_cell
        and device_alerts.week_start = windowed.week_start
    left join weather_weekly
        on weather_weekly.week_start = windowed.week_start
    left join calendar
        on calendar.date_day = windowed.week_start + 3

)

select * from final
