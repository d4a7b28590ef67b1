-- Incident counts per city grid cell and city-local week, on the dense grid (zeros included), in total
-- and per taxonomy domain. One incident = one real event (fct_incident), placed in the week of its
-- local date (fct_incident.week_start_local). Events without a cell (located to the district only)
-- and events in edge cells outside the city grid are not counted here.
--
-- The domain columns come from var('feature_incident_domains') (default: the eight domains of the
-- city taxonomy, reference/taxonomy/taxonomy.csv); the mart's test "incident_count = sum of the domain
-- columns" fails should a domain appear in the data that the list lacks.

{%- set domains = var('feature_incident_domains', ['PS', 'FE', 'TR', 'NH', 'PR', 'UL', 'PH', 'PO']) %}

with

grid as (

    select * from {{ ref('int_cell_week_grid') }}

),

incidents as (

    select * from {{ ref('fct_incident') }}
    where h3_cell is not null

),

cell_week_counts as (

    select
        h3_cell,
        week_start_local                                        as week_start,
        count(*)                                                as incident_count,
        {%- for domain in domains %}
        count(*) filter (where domain_code = '{{ domain }}')     as incident_count_{{ domain | lower }}{{ "," if not loop.last }}
        {%- endfor %}

    from incidents
    group by h3_cell, week_start_local

),

final as (

    select
        grid.h3_cell,
        grid.district_code,
        grid.neighbor_cells,
        grid.week_start,
        grid.week_end,
        grid.days_in_data,
        grid.weeks_of_history,

        coalesce(cell_week_counts.incident_count, 0)            as incident_count,
        {%- for domain in domains %}
        coalesce(cell_week_counts.incident_count_{{ domain | lower }}, 0)
                                                                as incident_count_{{ domain | lower }}{{ "," if not loop.last }}
        {%- endfor %}

    from grid
    left join cell_week_counts
        on cell_week_counts.h3_cell = grid.h3_cell
        and cell_week_counts.week_start = grid.week_start

)

select * from final
