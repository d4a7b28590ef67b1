-- Per device and hour: the grade the hour's value reaches, and the alert grade held with hysteresis.
--
-- Rule (documented in the YAML and seeds/device_alert_thresholds.yml), for every grade g:
--   * an hour with a reading TRIGGERS g when its value reaches threshold_g;
--   * an hour with a reading BREAKS g when its value is beyond the clear level threshold_g -/+ margin;
--   * g is held at hour t when some hour s <= t triggered g and no hour in (s, t] broke it.
-- Gap hours (no reading) neither trigger nor break: a gap of up to max_bridged_gap_hours consecutive
-- hours carries the state over; every hour of a longer gap breaks every grade (the device was silent
-- too long for us to assume the alert still holds).
-- "held at t" is "the latest trigger is newer than the latest break", so plain running maxima do it:
-- no recursion, one pass of window functions. The alert episode is an island of hours holding blue.
--
-- Below-measures (gas pressure) are graded on the negated value against negated thresholds, so every
-- comparison below reads "higher is worse".

-- A table, not a view: both device marts and this model's tests read it, and as a view each of them
-- would repeat the window pass over the Delta scan.
{{ config(materialized='table') }}

{%- set max_bridged_gap_hours = var('device_alert_max_bridged_gap_hours', 3) %}
{%- set grades = ['blue', 'yellow', 'orange', 'red'] %}

with

hourly as (

    select * from {{ ref('stg_silver__device_reading_hourly') }}

),

thresholds as (

    select * from {{ ref('device_alert_thresholds') }}

),

graded_hours as (

    select
        hourly.device_id,
        hourly.hour_utc,
        hourly.device_type,
        hourly.unit,
        hourly.district_code,
        hourly.h3_cell,
        hourly.reading_count,
        hourly.value_mean,
        hourly.value_min,
        hourly.value_max,
        hourly.is_gap,

        thresholds.measure,
        thresholds.direction,
        thresholds.unit                                                     as threshold_unit,
        thresholds.clear_margin,

        -- the hour's worst value: its maximum for an above-measure, its minimum for a below-measure
        case thresholds.direction
            when 'above' then hourly.value_max
            when 'below' then hourly.value_min
        end                                                                 as graded_value,

        -- sign that turns a below-measure into an above-measure
        case thresholds.direction when 'below' then -1.0 else 1.0 end       as direction_sign,
        {%- for grade in grades %}
        thresholds.{{ grade }}_threshold,
        {%- endfor %}

        -- consecutive gap hours of the gap run this hour is in (0 for an hour with a reading)
        sum(case when hourly.is_gap then 0 else 1 end) over (
            partition by hourly.device_id order by hourly.hour_utc
            rows between unbounded preceding and current row
        )                                                                   as hours_with_reading_so_far

    from hourly
    left join thresholds
        on hourly.device_type = thresholds.device_type

),

gap_runs as (

    select
        *,
        case
            when is_gap then count(*) over (partition by device_id, hours_with_reading_so_far, is_gap)
            else 0
        end                                                                 as gap_run_hours
    from graded_hours

),

triggers_and_breaks as (

    select
        *,
        is_gap and gap_run_hours > {{ max_bridged_gap_hours }}              as is_long_gap,
        {%- for grade in grades %}
        not is_gap
            and direction_sign * graded_value >= direction_sign * {{ grade }}_threshold
                                                                            as triggers_{{ grade }},
        (not is_gap
            and direction_sign * graded_value < direction_sign * {{ grade }}_threshold - clear_margin)
            or (is_gap and gap_run_hours > {{ max_bridged_gap_hours }})
                                                                            as breaks_{{ grade }}{{ "," if not loop.last }}
        {%- endfor %}
    from gap_runs

),

held as (

    select
        *,
        {%- for grade in grades %}
        max(case when triggers_{{ grade }} then hour_utc end) over device_so_far
            > coalesce(max(case when breaks_{{ grade }} then hour_utc end) over device_so_far,
                       '-infinity'::timestamptz)
                                                                            as holds_{{ grade }}{{ "," if not loop.last }}
        {%- endfor %}
    from triggers_and_breaks
    window device_so_far as (
        partition by device_id order by hour_utc rows between unbounded preceding and current row
    )

),

ranked as (

    select
        *,
        -- NULL for a gap hour: there is no value to grade
        case
            when is_gap then null
            when triggers_red then 4
            when triggers_orange then 3
            when triggers_yellow then 2
            when triggers_blue then 1
            else 0
        end                                                                 as value_grade_rank,
        case
            when coalesce(holds_red, false) then 4
            when coalesce(holds_orange, false) then 3
            when coalesce(holds_yellow, false) then 2
            when coalesce(holds_blue, false) then 1
            else 0
        end                                                                 as alert_grade_rank
    from held

),

episodes as (

    select
        *,
        -- an island of consecutive alert hours starts where the previous hour held no alert
        alert_grade_rank >= 1
            and coalesce(lag(alert_grade_rank) over device_hours, 0) = 0      as starts_alert,
        lead(is_gap) over device_hours                                      as next_hour_is_gap,
        max(hour_utc) over (partition by device_id)                         as device_last_hour_utc
    from ranked
    window device_hours as (partition by device_id order by hour_utc)

),

numbered as (

    select
        *,
        case
            when alert_grade_rank >= 1 then
                max(case when starts_alert then hour_utc end) over (
                    partition by device_id order by hour_utc
                    rows between unbounded preceding and current row
                )
        end                                                                 as alert_start_hour_utc
    from episodes

),

final as (

    select
        device_id,
        hour_utc,
        device_type,
        unit,
        district_code,
        h3_cell,
        reading_count,
        value_mean,
        value_min,
        value_max,
        is_gap,
        gap_run_hours,
        is_long_gap,
        measure,
        direction,
        threshold_unit,
        graded_value,
        value_grade_rank,
        alert_grade_rank,
        case
            when alert_start_hour_utc is not null
                then device_id || '@' || strftime(timezone('UTC', alert_start_hour_utc), '%Y-%m-%dT%H:00Z')
        end                                                                 as alert_id,
        alert_start_hour_utc,
        next_hour_is_gap,
        device_last_hour_utc
    from numbered

)

select * from final
