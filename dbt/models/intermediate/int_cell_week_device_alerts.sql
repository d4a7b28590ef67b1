-- IoT device alerts per city grid cell and city-local week, for the devices located in the cell
-- (fct_device_alert.h3_cell, the device's cell):
--
--   episodes started   alert episodes whose first hour falls in the week (local date of the start
--                      hour), in total and by the episode's peak grade;
--   alert hours        hours of the week during which an episode held (its hours from start to last
--                      alert hour, bridged gap hours included, as in duration_hours), each hour placed
--                      in the local week of its start: an episode running over Sunday midnight counts
--                      its hours in both weeks.

{%- set grades = ['blue', 'yellow', 'orange', 'red'] %}

with

grid as (

    select * from {{ ref('int_cell_week_grid') }}

),

devices as (

    select * from {{ ref('dim_device') }}
    where h3_cell is not null

),

alerts as (

    select * from {{ ref('fct_device_alert') }}
    where h3_cell is not null

),

cell_devices as (

    select
        h3_cell,
        count(*)                                                as device_count

    from devices
    group by h3_cell

),

episodes_started as (

    select
        h3_cell,
        {{ local_week_start('start_date_local') }}              as week_start,
        count(*)                                                as device_alert_episodes_started,
        {%- for grade in grades %}
        count(*) filter (where peak_grade = '{{ grade }}')       as device_alert_episodes_peak_{{ grade }}{{ "," if not loop.last }}
        {%- endfor %}

    from alerts
    group by 1, 2

),

alert_hours as (

    -- one row per hour an episode held (set-based: the episode's hour range unnested)
    select
        h3_cell,
        unnest(generate_series(start_hour_utc, last_alert_hour_utc, interval 1 hour)) as hour_utc

    from alerts

),

hours_per_week as (

    select
        h3_cell,
        {{ local_week_start(to_city_local_time('hour_utc')) }}  as week_start,
        count(*)                                                as device_alert_hours

    from alert_hours
    group by 1, 2

),

final as (

    select
        grid.h3_cell,
        grid.week_start,
        coalesce(cell_devices.device_count, 0)                  as device_count,
        coalesce(episodes_started.device_alert_episodes_started, 0) as device_alert_episodes_started,
        {%- for grade in grades %}
        coalesce(episodes_started.device_alert_episodes_peak_{{ grade }}, 0)
                                                                as device_alert_episodes_peak_{{ grade }},
        {%- endfor %}
        coalesce(hours_per_week.device_alert_hours, 0)          as device_alert_hours

    from grid
    left join cell_devices
        on cell_devices.h3_cell = grid.h3_cell
    left join episodes_started
        on episodes_started.h3_cell = grid.h3_cell
        and episodes_started.week_start = grid.week_start
    left join hours_per_week
        on hours_per_week.h3_cell = grid.h3_cell
        and hours_per_week.week_start = grid.week_start

)

select * from final
