-- Great Expectations results: one row per expectation per validation run (the gate before each publish).

with

source as (

    select * from {{ source('silver', 'validation_result') }}

),

renamed as (

    select
        cast(run_id as varchar)                 as run_id,
        cast(suite as varchar)                  as suite,
        cast(table_name as varchar)             as table_name,
        -- registry name of the validated source; 'reference' for the reference tables
        cast(source as varchar)                 as source,
        cast(expectation as varchar)            as expectation,
        cast(column_name as varchar)            as column_name,
        cast(success as boolean)                as is_success,
        cast(unexpected_count as bigint)        as unexpected_count,
        cast(element_count as bigint)           as element_count,
        cast(validated_at as timestamptz)       as validated_at_utc

    from source

)

select * from renamed
