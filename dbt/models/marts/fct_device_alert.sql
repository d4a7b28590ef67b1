-- One row per alert episode per device: an island of consecutive hours holding at least blue
-- (int_device_hourly_alert_state has the hysteresis rule), with its start, end, duration, peak and
-- escalation (hours per grade and the grade sequence).

with

alert_hours as (

    select * from {{ ref('int_device_hourly_alert_state') }}
    where alert_id is not null

),

-- the end of each device's data: an alert still holding then is open
device_data_ends as (

    select
        device_id,
        max(hour_utc)                                                       as device_last_hour_utc
    from {{ ref('int_device_hourly_alert_state') }}
    group by device_id

),

grade_changes as (

    select
        *,
        -- first hour of each run of one grade inside the episode, for the grade sequence
        alert_grade_rank is distinct from lag(alert_grade_rank) over (
            partition by alert_id order by hour_utc
        )                                                                   as starts_grade_run
    from alert_hours

),

episodes as (

    select
        alert_id,
        device_id,
        any_value(device_type)                                              as device_type,
        any_value(measure)                                                  as measure,
        any_value(direction)                                                as direction,
        any_value(unit)                                                     as unit,
        any_value(district_code)                                            as district_code,
        any_value(h3_cell)                                                  as h3_cell,

        min(hour_utc)                                                       as start_hour_utc,
        max(hour_utc)                                                       as last_alert_hour_utc,
        arg_max(next_hour_is_gap, hour_utc)                                 as ended_by_gap,
        count(*)                                                            as duration_hours,

        max(alert_grade_rank)                                               as peak_grade_rank,
        case any_value(direction)
            when 'below' then min(graded_value)
            else max(graded_value)
        end                                                                 as peak_value,
        arg_min(alert_grade_rank, hour_utc)                                 as start_grade_rank,

        count(*) filter (where not is_gap and alert_grade_rank = 1)          as hours_blue,
        count(*) filter (where not is_gap and alert_grade_rank = 2)          as hours_yellow,
        count(*) filter (where not is_gap and alert_grade_rank = 3)          as hours_orange,
        count(*) filter (where not is_gap and alert_grade_rank = 4)          as hours_red,
        count(*) filter (where is_gap)                                      as gap_hours,

        string_agg(
            case alert_grade_rank
                when 1 then 'blue' when 2 then 'yellow' when 3 then 'orange' when 4 then 'red'
            end,
            '>' order by hour_utc
        ) filter (where starts_grade_run)                                   as grade_sequence

    from grade_changes
    group by alert_id, device_id

),

peaks as (

    -- the first hour that reached the episode's peak value
    select
        alert_id,
        min(hour_utc)                                                       as peak_hour_utc
    from alert_hours
    inner join episodes using (alert_id)
    where alert_hours.graded_value = episodes.peak_value
    group by alert_id

),

final as (

    select
        episodes.alert_id,
        episodes.device_id,
        episodes.device_type,
        episodes.measure,
        episodes.direction,
        episodes.unit,
        episodes.district_code,
        episodes.h3_cell,

        episodes.start_hour_utc,
        timezone('{{ var("city_timezone") }}', episodes.start_hour_utc)      as start_hour_local,
        cast(timezone('{{ var("city_timezone") }}', episodes.start_hour_utc) as date)
                                                                            as start_date_local,
        episodes.last_alert_hour_utc,
        -- the hour the alert stopped holding; NULL while it still holds at the end of the device's data
        case
            when episodes.last_alert_hour_utc < device_data_ends.device_last_hour_utc
                then episodes.last_alert_hour_utc + interval 1 hour
        end                                                                 as end_hour_utc,
        episodes.last_alert_hour_utc = device_data_ends.device_last_hour_utc
                                                                            as is_open,
        case
            when episodes.last_alert_hour_utc = device_data_ends.device_last_hour_utc then null
            when episodes.ended_by_gap then 'data_gap'
            else 'cleared'
        end                                                                 as end_reason,
        episodes.duration_hours,

        episodes.start_grade_rank,
        case episodes.start_grade_rank
            when 1 then 'blue' when 2 then 'yellow' when 3 then 'orange' when 4 then 'red'
        end                                                                 as start_grade,
        episodes.peak_grade_rank,
        case episodes.peak_grade_rank
            when 1 then 'blue' when 2 then 'yellow' when 3 then 'orange' when 4 then 'red'
        end                                                                 as peak_grade,
        episodes.peak_value,
        peaks.peak_hour_utc,

        episodes.hours_blue,
        episodes.hours_yellow,
        episodes.hours_orange,
        episodes.hours_red,
        episodes.gap_hours,
        episodes.grade_sequence

    from episodes
    inner join peaks using (alert_id)
    inner join device_data_ends using (device_id)

)

select * from final
