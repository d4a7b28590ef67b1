-- The city's H3 grid: every cell whose centre lies in a district, with its ring-1 neighbours.

with

source as (

    select * from {{ source('silver', 'h3_cell') }}

),

renamed as (

    select
        cast(h3_cell as varchar)                as h3_cell,
        cast(resolution as integer)             as h3_resolution,
        cast(district_code as varchar)          as district_code,
        cast(centroid_lon as double)            as centroid_lon,
        cast(centroid_lat as double)            as centroid_lat,
        -- silver keeps the neighbours as a JSON array text; a list is what SQL can unnest
        cast(from_json(neighbors, '["VARCHAR"]') as varchar[]) as neighbor_cells

    from source

)

select * from renamed
