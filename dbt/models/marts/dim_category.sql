-- The incident taxonomy as a dimension: one row per subcategory, with its category and domain.

with

taxonomy as (

    select * from {{ ref('stg_silver__taxonomy') }}

),

final as (

    select
        subcategory_code,
        subcategory_name_en,
        subcategory_name_zh,
        category_code,
        category_name_en,
        category_name_zh,
        domain_code,
        domain_name_en,
        domain_name_zh,
        severity_default

    from taxonomy

)

select * from final
