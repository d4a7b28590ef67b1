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

-- Incremental (this window pass over every device hour is the longest step of a full build). A row
-- depends on the device's earlier rows (the running state) and on its next row (next_hour_is_gap).
-- An incremental run therefore recomputes, per device whose silver hours changed, every hour after
-- its last QUIET hour before the change: an hour with a reading that holds no alert and is not the
-- last unchanged row (so its next row is unchanged too). Nothing before a quiet hour reaches past it
-- (a held grade needs a trigger no break followed; a gap run ends at a reading), so the recomputed
-- rows equal a full build's. The strategy replace_tail (macros/replace_tail.sql) swaps each such
-- device's rows from that hour on. Changes are found by silver's own stamp: the silver job sets
-- _changed_at on every hour it inserts or changes (and on no other), and each row here keeps the
-- stamp it was computed from, so the hours changed since the last build are those stamped after the
-- newest stamp held here; a device held here that silver no longer has is deleted. A change of this
-- model, the thresholds seed or a var needs a full build: citysafe.warehouse does one when the dbt
-- project or the vars changed.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_tail',
    unique_key=['device_id', 'hour_utc'],
    on_schema_change='fail',
) }}

{%- set max_bridged_gap_hours = var('device_alert_max_bridged_gap_hours', 3) %}
{%- set grades = ['blue', 'yellow', 'orange', 'red'] %}

with

-- read up to three times in an incremental run: scanning Delta again is cheaper than holding it in memory
silver_hours as not materialized (

    select * from {{ ref('stg_silver__device_reading_hourly') }}

),

{% if is_incremental() %}

-- per device, the first hour silver inserted or changed after the newest stamp held here (an hour
-- stamped NULL predates the stamp and every build since), and every device held here that silver no
-- longer has (from the beginning: all its rows go)
first_changes as (

    {{ first_changes('silver_hours', this, 'silver_changed_at', 'silver_changed_at') }}

),

-- the last unchanged row before the change: a quiet hour must lie before it, so that the quiet hour's
-- next row (next_hour_is_gap) is unchanged
last_unchanged as (

    select
        first_changes.device_id,
        first_changes.first_changed_hour_utc,
        max(built.hour_utc)                                             as last_unchanged_hour_utc
    from first_changes
    left join {{ this }} as built
        on built.device_id = first_changes.device_id
        and built.hour_utc < first_changes.first_changed_hour_utc
    group by first_changes.device_id, first_changes.first_changed_hour_utc

),

recompute_from as (

    select
        last_unchanged.device_id,
        -- no quiet hour before the change: the device's every hour
        coalesce(max(built.hour_utc) + interval 1 hour, '-infinity'::timestamptz)
                                                                        as recompute_from_hour_utc
    from last_unchanged
    left join {{ this }} as built
        on built.device_id = last_unchanged.device_id
        and built.hour_utc < last_unchanged.last_unchanged_hour_utc
        and not built.is_gap
        and built.alert_grade_rank = 0
    group by last_unchanged.device_id

),

hourly as (

    select silver_hours.*
    from silver_hours
    inner join recompute_from
        on recompute_from.device_id = silver_hours.device_id
        and silver_hours.hour_utc >= recompute_from.recompute_from_hour_utc

),

{% else %}

hourly as (

    select * from silver_hours

),

{% endif %}

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
        hourly.silver_changed_at,

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

    -- An hour never both triggers and breaks a grade, so "the latest trigger is newer than the latest
    -- break" is "the latest event is a trigger": one running maximum per grade over the event's time
    -- with its kind in the lowest bit (odd: trigger), half the window work of two maxima.
    select
        *,
        {%- for grade in grades %}
        max(
            case
                when triggers_{{ grade }} then epoch_us(hour_utc) * 2 + 1
                when breaks_{{ grade }} then epoch_us(hour_utc) * 2
            end
        ) over device_so_far % 2 = 1                                       as holds_{{ grade }}{{ "," if not loop.last }}
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
        lead(is_gap) over device_hours                                      as next_hour_is_gap
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
        silver_changed_at,
        -- this build's start: the rows it computed (fct_device_reading_hourly recomputes from them, and
        -- the data tests of an incremental build check them and what follows)
        '{{ run_started_at.isoformat() }}'::timestamptz                      as computed_at
    from numbered

)

select * from final
{%- if is_incremental() %}
-- a device whose every hour left silver: a marker (no hour) that makes replace_tail delete its rows
union all by name
select first_changes.device_id
from first_changes
anti join silver_hours using (device_id)
{%- endif %}
