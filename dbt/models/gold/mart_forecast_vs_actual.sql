-- Every published forecast (all origins) next to what happened: the actual weekly count once the target
-- week is complete, and whether it fell inside the 80% interval.

with

forecasts as (

    select * from {{ source('gold', 'forecast') }}

),

incidents as (

    select * from {{ ref('fct_incident') }}

),

hazards as (

    select * from {{ ref('fct_hazard') }}

),

complete_weeks as (

    select distinct week_start
    from {{ ref('mart_cell_week_features') }}
    where is_complete_week

),

incident_weeks as (

    select 'incidents' as measure, district_code, domain_code, week_start_local as week_start, count(*) as n
    from incidents
    where district_code is not null and domain_code is not null
    group by all

),

hazard_weeks as (

    select
        'hazards_found' as measure,
        district_code,
        domain_code,
        cast(date_trunc('week', found_date) as date) as week_start,
        count(*) as n
    from hazards
    where district_code is not null and domain_code is not null and found_date is not null
    group by all

),

district_counts as (

    select * from incident_weeks
    union all
    select * from hazard_weeks

),

counts as (

    select measure, district_code, domain_code, week_start, n from district_counts
    union all
    select measure, 'CITY' as district_code, domain_code, week_start, sum(n) as n
    from district_counts
    group by measure, domain_code, week_start

),

final as (

    select
        forecasts.series_id,
        forecasts.measure,
        forecasts.level,
        forecasts.district_code,
        forecasts.domain_code,
        forecasts.origin_week_start,
        forecasts.target_week_start,
        forecasts.horizon,
        forecasts.method,
        forecasts.p10,
        forecasts.p50,
        forecasts.p90,
        complete_weeks.week_start is not null                   as is_actual_known,
        case when complete_weeks.week_start is not null then coalesce(counts.n, 0) end
                                                                as actual,
        case when complete_weeks.week_start is not null
            then coalesce(counts.n, 0) between forecasts.p10 and forecasts.p90 end
                                                                as is_within_interval,
        forecasts.model_run_key

    from forecasts
    left join complete_weeks
        on complete_weeks.week_start = forecasts.target_week_start
    left join counts
        on counts.measure = forecasts.measure
        and counts.district_code = forecasts.district_code
        and counts.domain_code = forecasts.domain_code
        and counts.week_start = forecasts.target_week_start

)

select * from final
