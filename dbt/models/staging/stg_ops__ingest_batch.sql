-- One row per batch loaded into bronze: the volume and time of every load.

with

source as (

    select * from {{ source('ops', 'ingest_batch') }}

),

renamed as (

    select
        cast(batch_id as varchar)               as batch_id,
        cast(source as varchar)                 as source,
        cast(connector_type as varchar)         as connector_type,

        -- volume
        cast(file_count as integer)             as file_count,
        cast(row_count as bigint)               as row_count,
        cast(malformed_row_count as bigint)     as malformed_row_count,
        cast(byte_count as bigint)              as byte_count,

        -- incremental pulls only (files connectors have none)
        cast(watermark_from as varchar)         as watermark_from,
        cast(watermark_to as varchar)           as watermark_to,

        -- time
        cast(landed_at as timestamptz)          as landed_at_utc,
        cast(ingested_at as timestamptz)        as ingested_at_utc

    from source

)

select * from renamed
