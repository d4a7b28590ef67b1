-- City districts (one row per district) with names in both languages, size and H3 coverage.

with

districts as (

    select * from {{ ref('stg_silver__district') }}

),

cells as (

    select
        district_code,
        count(*)                                    as h3_cell_count

    from {{ ref('stg_silver__h3_cell') }}
    group by district_code

),

final as (

    select
        districts.district_code,
        districts.district_name_zh,
        districts.district_name_en,
        districts.area_km2,
        districts.centroid_lon,
        districts.centroid_lat,
        coalesce(cells.h3_cell_count, 0)            as h3_cell_count,
        districts.geometry_wkt

    from districts
    left join cells
        on cells.district_code = districts.district_code

)

select * from final
