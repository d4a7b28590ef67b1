-- Inspection findings (safety hazards) with their rectification lifecycle, typed and renamed.
-- Personal data stops here: the inspector's staff number (inspector_id) is left out.

with

source as (

    select * from {{ source('silver', 'hazard') }}

),

renamed as (

    select
        -- ids
        cast(hazard_id as varchar)              as hazard_id,
        cast(source as varchar)                 as source,

        -- enterprise (resolved by silver; every published hazard has one)
        cast(enterprise_id as varchar)          as enterprise_id,
        cast(enterprise_match as varchar)       as enterprise_match,
        cast(enterprise_ref as varchar)         as enterprise_ref,
        cast(enterprise_name as varchar)        as enterprise_name_delivered,

        -- the bureau's classification and the city taxonomy
        cast(source_code as varchar)            as source_code,
        cast(source_label as varchar)           as source_label,
        cast(domain_code as varchar)            as domain_code,
        cast(category_code as varchar)          as category_code,
        cast(subcategory_code as varchar)       as subcategory_code,
        cast(severity as varchar)               as severity,

        -- lifecycle: local calendar dates
        cast(found_date as date)                as found_date,
        cast(rectify_deadline as date)          as rectify_deadline,
        cast(rectified_date as date)            as rectified_date,
        cast(accepted_date as date)             as accepted_date,
        cast(status as varchar)                 as status,
        cast(status_raw as varchar)             as status_raw,

        -- silver's lifecycle flags, evaluated as of as_of_date
        cast(is_closed as boolean)              as is_closed,
        cast(is_overdue_open as boolean)        as is_overdue_open,
        cast(closed_late as boolean)            as closed_late,
        cast(days_to_rectify as integer)        as days_to_rectify,
        cast(days_to_accept as integer)         as days_to_accept,
        cast(as_of_date as date)                as as_of_date,

        -- place
        cast(district_code as varchar)          as district_code,
        cast(h3_cell as varchar)                as h3_cell,

        -- state
        cast(updated_at_utc as timestamptz)     as updated_at_utc,

        -- lineage
        {{ silver_lineage_columns() }}

    from source

)

select * from renamed
