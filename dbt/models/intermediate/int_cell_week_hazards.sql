-- Safety hazards open in each city grid cell at the END of each city-local week (the week's Sunday).
-- Every hazard date is a local calendar day, so "at the end of the week" means after the Sunday:
--
--   open at week end      found_date <= week_end and not closed by then
--                         (closed_date is null or closed_date > week_end); closed_date is fct_hazard's
--                         (rectified, else accepted). A hazard closed inside the week is not open at
--                         its end; one found after the week's Sunday is not counted.
--   overdue at week end   open at week end and rectify_deadline < week_end (fct_hazard's rule with
--                         week_end as the as-of date: the deadline day itself is still in time)
--
-- The lake only knows hazards' state up to fct_hazard.as_of_date: for a week ending after it, the
-- state is taken at as_of_date (a hazard's later rectification is not known yet).

with

grid as (

    select * from {{ ref('int_cell_week_grid') }}

),

hazards as (

    select * from {{ ref('fct_hazard') }}
    where h3_cell is not null

),

cell_weeks as (

    select
        grid.h3_cell,
        grid.week_start,
        grid.week_end,
        -- the date the hazards' state is evaluated at (see above)
        least(grid.week_end, coalesce((select max(as_of_date) from hazards), grid.week_end))
                                                                as state_date

    from grid

),

open_at_week_end as (

    select
        cell_weeks.h3_cell,
        cell_weeks.week_start,
        count(*)                                                as open_hazard_count,
        count(*) filter (
            where hazards.rectify_deadline < cell_weeks.state_date
        )                                                       as overdue_open_hazard_count,
        count(*) filter (where hazards.severity = 'major')      as open_major_hazard_count

    from cell_weeks
    inner join hazards
        on hazards.h3_cell = cell_weeks.h3_cell
        and hazards.found_date <= cell_weeks.state_date
        and (hazards.closed_date is null or hazards.closed_date > cell_weeks.state_date)
    group by cell_weeks.h3_cell, cell_weeks.week_start

),

final as (

    select
        cell_weeks.h3_cell,
        cell_weeks.week_start,
        cell_weeks.state_date                                   as hazard_state_date,
        coalesce(open_at_week_end.open_hazard_count, 0)         as open_hazard_count,
        coalesce(open_at_week_end.overdue_open_hazard_count, 0) as overdue_open_hazard_count,
        coalesce(open_at_week_end.open_major_hazard_count, 0)   as open_major_hazard_count

    from cell_weeks
    left join open_at_week_end
        on open_at_week_end.h3_cell = cell_weeks.h3_cell
        and open_at_week_end.week_start = cell_weeks.week_start

)

select * from final
