-- The city's unified incident taxonomy: domain > category > subcategory, English and Chinese names.

with

source as (

    select * from {{ source('silver', 'taxonomy') }}

),

renamed as (

    select
        cast(subcategory_code as varchar)       as subcategory_code,
        cast(subcategory_en as varchar)         as subcategory_name_en,
        cast(subcategory_zh as varchar)         as subcategory_name_zh,

        cast(category_code as varchar)          as category_code,
        cast(category_en as varchar)            as category_name_en,
        cast(category_zh as varchar)            as category_name_zh,

        cast(domain_code as varchar)            as domain_code,
        cast(domain_en as varchar)              as domain_name_en,
        cast(domain_zh as varchar)              as domain_name_zh,

        cast(severity_default as varchar)       as severity_default

    from source

)

select * from renamed
