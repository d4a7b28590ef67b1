-- Calendar of city-local dates covering the data: from 1 January of the earliest year with an incident
-- or weather record to 31 December of the year AFTER the latest one (deadlines and forecast weeks
-- reach past the data). vars dim_date_start / dim_date_end ('YYYY-MM-DD') override the range.

with

data_dates as (

    select occurred_date_local as date_day from {{ ref('stg_silver__incident') }}
    union all
    select weather_date_local as date_day from {{ ref('stg_silver__weather_daily') }}

),

{%- set start_override = var('dim_date_start', none) %}
{%- set end_override = var('dim_date_end', none) %}

bounds as (

    -- aggregates always return one row, also over no data
    select
        coalesce(
            {{ "date '" ~ start_override ~ "'" if start_override else "null" }},
            make_date(year(coalesce(min(date_day), current_date)), 1, 1)
        )                                                                   as first_day,
        coalesce(
            {{ "date '" ~ end_override ~ "'" if end_override else "null" }},
            make_date(year(coalesce(max(date_day), current_date)) + 1, 12, 31)
        )                                                                   as last_day

    from data_dates

),

days as (

    select cast(unnest(generate_series(first_day, last_day, interval 1 day)) as date) as date_day
    from bounds

),

final as (

    select
        date_day,

        year(date_day)                                                  as year,
        quarter(date_day)                                               as quarter,
        year(date_day) || '-Q' || quarter(date_day)                     as year_quarter,
        cast(date_trunc('quarter', date_day) as date)                   as quarter_start,
        month(date_day)                                                 as month,
        cast(date_trunc('month', date_day) as date)                     as month_start,
        strftime(date_day, '%B')                                        as month_name_en,
        day(date_day)                                                   as day_of_month,
        dayofyear(date_day)                                             as day_of_year,

        -- ISO 8601 weeks: Monday start; week 1 holds the year's first Thursday
        {{ local_week_start('date_day') }}                              as week_start,
        isoyear(date_day)                                               as iso_year,
        weekofyear(date_day)                                            as iso_week,
        isodow(date_day)                                                as iso_weekday,
        strftime(date_day, '%A')                                        as weekday_name_en,
        isodow(date_day) >= 6                                           as is_weekend

    from days

)

select * from final
