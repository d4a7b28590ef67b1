-- One row per device and UTC hour, from the device's first to its last reading hour (gaps included):
-- the hour's readings in the canonical unit, the grade its value reaches and the alert grade held with
-- hysteresis (int_device_hourly_alert_state), with the city's local hour and date.

-- Incremental: a row is its alert-state row plus local times, so an incremental run takes, per device,
-- the alert-state rows computed after the newest alert_state_computed_at held here (int_device_hourly_alert_state
-- recomputes whole tails, so these are each changed device's rows from some hour on) and replaces the
-- device's rows from that hour on (replace_tail, as the model above); a device held here that the
-- alert state no longer has is deleted.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_tail',
    unique_key=['device_id', 'hour_utc'],
    on_schema_change='fail',
) }}

with

-- read twice in an incremental run: scanning the table twice is cheaper than holding it in memory
all_alert_state as not materialized (

    select * from {{ ref('int_device_hourly_alert_state') }}

),

{% if is_incremental() %}

-- per device, the first hour of the alert-state rows computed since the last build here, and every
-- device held here that the alert state no longer has (from the beginning: all its rows go)
first_changes as (

    {{ first_changes('all_alert_state', this, 'computed_at', 'alert_state_computed_at') }}

),

alert_state as (

    select all_alert_state.*
    from all_alert_state
    inner join first_changes
        on first_changes.device_id = all_alert_state.device_id
        and all_alert_state.hour_utc >= first_changes.first_changed_hour_utc

),

{% else %}

alert_state as (

    select * from all_alert_state

),

{% endif %}

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
        alert_id,

        -- lineage: the build that computed the hour's alert state, and the one that wrote this row
        computed_at                                                         as alert_state_computed_at,
        '{{ run_started_at.isoformat() }}'::timestamptz                      as computed_at

    from alert_state

)

select * from final
{%- if is_incremental() %}
-- a device whose every hour is gone: a marker (no hour) that makes replace_tail delete its rows
union all by name
select first_changes.device_id
from first_changes
anti join all_alert_state using (device_id)
{%- endif %}
