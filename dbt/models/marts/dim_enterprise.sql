-- One row per enterprise in the registry: identifiers, registered name, industry, place and status.
-- No personal data: the legal representative and the registered address never leave staging.

with

enterprises as (

    select * from {{ ref('stg_silver__enterprise') }}

),

identifiers as (

    select * from {{ ref('stg_silver__enterprise_identifier') }}

),

-- Whether a hazard (or any other feed) typed with only this name or legacy number can be resolved:
-- silver publishes a name / number as an identifier only when no other enterprise shares it.
resolvable as (

    select
        enterprise_id,
        bool_or(identifier_type = 'name_normalized') as name_resolves_uniquely,
        bool_or(identifier_type = 'legacy_reg_no')   as legacy_reg_no_resolves_uniquely

    from identifiers
    group by 1

),

final as (

    select
        enterprises.enterprise_id,
        enterprises.legacy_reg_no,
        enterprises.enterprise_name,
        enterprises.name_normalized,
        coalesce(resolvable.name_resolves_uniquely, false)          as name_resolves_uniquely,
        coalesce(resolvable.legacy_reg_no_resolves_uniquely, false) as legacy_reg_no_resolves_uniquely,
        -- 个体工商户 (individual businesses) carry organisation-type code 92 in their credit code
        substr(enterprises.enterprise_id, 1, 2) = '92'              as is_individual_business,
        enterprises.industry_code,
        enterprises.industry_name,
        enterprises.district_code,
        enterprises.h3_cell,
        enterprises.lon,
        enterprises.lat,
        enterprises.location_quality,
        enterprises.established_date,
        enterprises.registered_capital_wan,
        enterprises.status,
        enterprises.status = 'active'                               as is_active,
        enterprises.updated_at_utc

    from enterprises
    left join resolvable using (enterprise_id)

)

select * from final
order by enterprise_id
