-- The dense grid the cell-week features are computed on: every city grid cell x every city-local week
-- (Monday start) from the week of the first incident to the week of the last one, weeks without
-- incidents included (a model needs the zeros). Edge cells (dim_h3_cell.is_city_grid_cell = false) are
-- not in the grid: they exist only because an incident fell in them, and silver gives them no
-- neighbours.

with

cells as (

    select * from {{ ref('dim_h3_cell') }}
    where is_city_grid_cell

),

incidents as (

    select * from {{ ref('fct_incident') }}

),

data_span as (

    select
        min(occurred_date_local)                                as first_data_date,
        max(occurred_date_local)                                as last_data_date,
        min(week_start_local)                                   as first_week_start,
        max(week_start_local)                                   as last_week_start

    from incidents

),

weeks as (

    select
        cast(unnest(generate_series(first_week_start, last_week_start, interval 7 day)) as date)
                                                                as week_start,
        first_data_date,
        last_data_date,
        first_week_start

    from data_span
    -- no incidents at all: no weeks (generate_series over NULL bounds would fail the cast)
    where first_week_start is not null

),

final as (

    select
        cells.h3_cell,
        cells.district_code,
        cells.neighbor_cells,

        weeks.week_start,
        weeks.week_start + 6                                    as week_end,
        -- days of the week inside the data's span (the first and last weeks are usually cut)
        cast(least(weeks.week_start + 6, weeks.last_data_date)
             - greatest(weeks.week_start, weeks.first_data_date) + 1 as integer)
                                                                as days_in_data,
        -- completed weeks of data before this one (0 for the first week)
        cast((weeks.week_start - weeks.first_week_start) // 7 as integer)
                                                                as weeks_of_history

    from cells
    cross join weeks

)

select * from final
