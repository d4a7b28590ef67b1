-- Enterprise registry, one row per enterprise (unified social credit code), typed and renamed.
-- Personal data stops here: the legal representative's hash and the registered address are left out.

with

source as (

    select * from {{ source('silver', 'enterprise') }}

),

renamed as (

    select
        -- ids
        cast(enterprise_id as varchar)          as enterprise_id,
        cast(source as varchar)                 as source,
        cast(legacy_reg_no as varchar)          as legacy_reg_no,

        -- names
        cast(name as varchar)                   as enterprise_name,
        cast(name_normalized as varchar)        as name_normalized,

        -- industry
        cast(industry_code as varchar)          as industry_code,
        cast(industry_name as varchar)          as industry_name,

        -- place
        cast(district_code as varchar)          as district_code,
        cast(lon as double)                     as lon,
        cast(lat as double)                     as lat,
        cast(h3_cell as varchar)                as h3_cell,
        cast(location_quality as varchar)       as location_quality,

        -- registration
        cast(established_date as date)          as established_date,
        cast(registered_capital_wan as double)  as registered_capital_wan,
        cast(status as varchar)                 as status,
        cast(status_raw as varchar)             as status_raw,

        -- state
        cast(updated_at_utc as timestamptz)     as updated_at_utc,

        -- lineage
        {{ silver_lineage_columns() }}

    from source

)

select * from renamed
