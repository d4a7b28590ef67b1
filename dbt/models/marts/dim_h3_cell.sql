-- H3 cells: the city grid from silver (every cell whose centre lies in a district) plus the edge cells
-- that hold incident points but whose centre lies just outside the city polygons. Silver keeps only
-- the former, so without the latter fct_incident.h3_cell would point at cells the dimension lacks.

with

city_cells as (

    select * from {{ ref('stg_silver__h3_cell') }}

),

incident_cells as (

    select
        h3_cell,
        district_code,
        count(*)                                                    as incident_count

    from {{ ref('stg_silver__incident') }}
    where h3_cell is not null
    group by h3_cell, district_code

),

edge_cells as (

    select
        h3_cell,
        district_code

    from (
        select
            h3_cell,
            district_code,
            -- the district most of the cell's incidents are in (ties: the smaller code)
            row_number() over (
                partition by h3_cell order by incident_count desc, district_code
            )                                                       as district_rank
        from incident_cells
        where h3_cell not in (select h3_cell from city_cells)
    )
    where district_rank = 1

),

final as (

    select
        h3_cell,
        h3_resolution,
        district_code,
        centroid_lon,
        centroid_lat,
        neighbor_cells,
        len(neighbor_cells)                                         as neighbor_count,
        true                                                        as is_city_grid_cell

    from city_cells

    union all

    select
        h3_cell,
        -- the resolution is the index's second hex digit (H3 index layout)
        strpos('0123456789abcdef', lower(substr(h3_cell, 2, 1))) - 1  as h3_resolution,
        district_code,
        cast(null as double)                                        as centroid_lon,
        cast(null as double)                                        as centroid_lat,
        cast([] as varchar[])                                       as neighbor_cells,
        0                                                           as neighbor_count,
        false                                                       as is_city_grid_cell

    from edge_cells

)

select * from final
