-- Every identifier that resolves to exactly one enterprise: its credit code (uscc), its legacy
-- registration number (legacy_reg_no) and its normalised name (name_normalized).

with

source as (

    select * from {{ source('silver', 'enterprise_identifier') }}

),

renamed as (

    select
        cast(identifier_type as varchar)        as identifier_type,
        cast(identifier as varchar)             as identifier,
        cast(enterprise_id as varchar)          as enterprise_id

    from source

)

select * from renamed
