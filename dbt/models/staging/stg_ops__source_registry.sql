-- The source registry (sources/*.yaml) as the lake last loaded it: who delivers what, and how fresh it
-- should be.

with

source as (

    select * from {{ source('ops', 'source_registry') }}

),

renamed as (

    select
        cast(source as varchar)                         as source,
        cast(department as varchar)                     as department,
        cast(kind as varchar)                           as source_kind,
        cast(description as varchar)                    as source_description,
        cast(tags as varchar)                           as tags,
        -- tags as a list for filtering: list_contains(tag_list, 'synthetic')
        case when tags = '' then []::varchar[]
             else string_split(cast(tags as varchar), ',') end
                                                        as tag_list,
        cast(connector_type as varchar)                 as connector_type,
        cast(format_type as varchar)                    as format_type,
        cast(schedule as varchar)                       as schedule,
        cast(freshness_warn_after_hours as integer)     as freshness_warn_after_hours,
        cast(freshness_error_after_hours as integer)    as freshness_error_after_hours,
        cast(silver_table as varchar)                   as silver_table

    from source

)

select * from renamed
