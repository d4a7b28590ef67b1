-- Real-world events (fct_incident, linked duplicates counted once) per district x taxonomy category x
-- city-local week, with week-over-week and year-over-year change.
--
-- Grain: category (not subcategory): 42 categories keep weekly counts large enough to compare.
-- Complete grid: every district x category that has any event gets a row for EVERY week between the
-- first and the last week of the data, zero-filled, so a drop from 5 to 0 shows as -5 (a missing row
-- would hide it). Year over year compares with the same ISO week number of the previous ISO year;
-- NULL where that week is outside the data (no history) or does not exist (ISO week 53).

with

events as (

    select * from {{ ref('fct_incident') }}

),

week_range as (

    select
        min(week_start_local)                                   as first_week,
        max(week_start_local)                                   as last_week,
        min(occurred_date_local)                                as first_day,
        max(occurred_date_local)                                as last_day

    from events

),

weeks as (

    select
        cast(week_start as date)                                as week_start,
        -- the first and last week of the data may be cut by its date range
        cast(week_start as date) >= week_range.first_day
            and cast(week_start as date) + 6 <= week_range.last_day as is_complete_week

    from week_range,
        unnest(generate_series(week_range.first_week, week_range.last_week, interval 7 day)) as w(week_start)

),

district_categories as (

    select distinct
        district_code,
        domain_code,
        category_code

    from events

),

weekly_counts as (

    select
        district_code,
        category_code,
        week_start_local                                        as week_start,
        count(*)                                                as incident_count

    from events
    group by 1, 2, 3

),

grid as (

    select
        district_categories.district_code,
        district_categories.domain_code,
        district_categories.category_code,
        weeks.week_start,
        isoyear(weeks.week_start)                               as iso_year,
        weekofyear(weeks.week_start)                            as iso_week,
        weeks.is_complete_week,
        coalesce(weekly_counts.incident_count, 0)               as incident_count

    from district_categories
    cross join weeks
    left join weekly_counts
        on weekly_counts.district_code = district_categories.district_code
        and weekly_counts.category_code = district_categories.category_code
        and weekly_counts.week_start = weeks.week_start

),

compared as (

    select
        current_week.*,

        previous_week.incident_count                            as previous_week_count,
        current_week.incident_count - previous_week.incident_count as week_over_week_change,

        previous_year.week_start                                as previous_year_week_start,
        previous_year.incident_count                            as previous_year_count,
        current_week.incident_count - previous_year.incident_count as year_over_year_change

    from grid as current_week
    left join grid as previous_week
        on previous_week.district_code = current_week.district_code
        and previous_week.category_code = current_week.category_code
        and previous_week.week_start = current_week.week_start - 7
    left join grid as previous_year
        on previous_year.district_code = current_week.district_code
        and previous_year.category_code = current_week.category_code
        and previous_year.iso_year = current_week.iso_year - 1
        and previous_year.iso_week = current_week.iso_week

),

final as (

    select
        district_code,
        domain_code,
        category_code,
        week_start,
        iso_year,
        iso_week,
        is_complete_week,
        incident_count,
        previous_week_count,
        week_over_week_change,
        round(week_over_week_change / nullif(previous_week_count, 0), 4)   as week_over_week_change_ratio,
        previous_year_week_start,
        previous_year_count,
        year_over_year_change,
        round(year_over_year_change / nullif(previous_year_count, 0), 4)   as year_over_year_change_ratio

    from compared

)

select * from final
