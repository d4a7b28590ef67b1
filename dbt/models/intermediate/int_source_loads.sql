-- Per source: everything the lake loaded into bronze (batches, files, records, bytes) and when the
-- first and the newest batch were loaded. Sources that never loaded a batch have no row.

with

batches as (

    select * from {{ ref('stg_ops__ingest_batch') }}

),

newest_batch as (

    -- the newest load's watermark: where the next incremental pull starts
    select
        source,
        watermark_to
    from batches
    qualify row_number() over (partition by source order by ingested_at_utc desc, batch_id desc) = 1

),

per_source as (

    select
        source,
        count(*)                    as batch_count,
        sum(file_count)             as file_count,
        sum(row_count)              as rows_loaded,
        sum(malformed_row_count)    as malformed_rows_loaded,
        sum(byte_count)             as bytes_loaded,
        min(ingested_at_utc)        as first_loaded_at_utc,
        max(ingested_at_utc)        as last_loaded_at_utc
    from batches
    group by source

),

final as (

    select
        per_source.source,
        cast(per_source.batch_count as bigint)              as batch_count,
        cast(per_source.file_count as bigint)               as file_count,
        cast(per_source.rows_loaded as bigint)              as rows_loaded,
        cast(per_source.malformed_rows_loaded as bigint)    as malformed_rows_loaded,
        cast(per_source.bytes_loaded as bigint)             as bytes_loaded,
        per_source.first_loaded_at_utc,
        per_source.last_loaded_at_utc,
        newest_batch.watermark_to                           as last_watermark
    from per_source
    inner join newest_batch using (source)

)

select * from final
