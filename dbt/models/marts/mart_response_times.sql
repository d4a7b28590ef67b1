-- Fire/EMS response times per district and city-local week: received -> dispatched (dispatch),
-- received -> on scene (response) and dispatched -> on scene (travel), in seconds.
-- Median and p90 use quantile_cont (linear interpolation between the two nearest calls, as pandas'
-- default quantile). A call missing a time of a pair (cancelled, not yet on scene) is left out of that
-- pair's statistics and counted in its missing_* column, never dropped silently:
--   call_count = <pair>_call_count + missing_<pair>_count for every pair.

{%- set response_sources = var('response_time_sources', []) %}

with

calls as (

    select * from {{ ref('stg_silver__incident') }}
    where source in ({% for s in response_sources %}'{{ s }}'{{ ", " if not loop.last }}{% endfor %})

),

intervals as (

    select
        district_code,
        {{ local_week_start('occurred_date_local') }}                       as week_start,
        (epoch_ms(dispatched_at_utc) - epoch_ms(received_at_utc)) / 1000.0  as dispatch_seconds,
        (epoch_ms(on_scene_at_utc) - epoch_ms(received_at_utc)) / 1000.0    as response_seconds,
        (epoch_ms(on_scene_at_utc) - epoch_ms(dispatched_at_utc)) / 1000.0  as travel_seconds

    from calls

),

weekly as (

    select
        district_code,
        week_start,
        count(*)                                                            as call_count,

        -- received -> dispatched
        count(dispatch_seconds)                                             as dispatch_call_count,
        count(*) - count(dispatch_seconds)                                  as missing_dispatch_count,
        quantile_cont(dispatch_seconds, 0.5)                                as dispatch_seconds_median,
        quantile_cont(dispatch_seconds, 0.9)                                as dispatch_seconds_p90,

        -- received -> on scene
        count(response_seconds)                                             as response_call_count,
        count(*) - count(response_seconds)                                  as missing_response_count,
        quantile_cont(response_seconds, 0.5)                                as response_seconds_median,
        quantile_cont(response_seconds, 0.9)                                as response_seconds_p90,

        -- dispatched -> on scene
        count(travel_seconds)                                               as travel_call_count,
        count(*) - count(travel_seconds)                                    as missing_travel_count,
        quantile_cont(travel_seconds, 0.5)                                  as travel_seconds_median,
        quantile_cont(travel_seconds, 0.9)                                  as travel_seconds_p90

    from intervals
    group by district_code, week_start

)

select * from weekly
