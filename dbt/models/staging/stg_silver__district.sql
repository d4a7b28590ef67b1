-- City districts with their names, area, centroid and boundary.

with

source as (

    select * from {{ source('silver', 'district') }}

),

renamed as (

    select
        cast(district_code as varchar)          as district_code,
        cast(name_zh as varchar)                as district_name_zh,
        cast(name_en as varchar)                as district_name_en,
        cast(area_km2 as double)                as area_km2,
        cast(centroid_lon as double)            as centroid_lon,
        cast(centroid_lat as double)            as centroid_lat,
        cast(geometry_wkt as varchar)           as geometry_wkt

    from source

)

select * from renamed
