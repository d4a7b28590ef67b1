-- Per registered source: when the lake last loaded it, and how that compares with the freshness the
-- registry expects. Lags are measured at freshness_as_of(): the time of the dbt build (UTC), or the
-- var freshness_as_of when given.

with

registry as (

    select * from {{ ref('stg_ops__source_registry') }}

),

loads as (

    select * from {{ ref('int_source_loads') }}

),

measured as (

    select
        registry.source,
        registry.department,
        registry.source_kind,
        registry.tags,
        registry.connector_type,
        registry.schedule,
        registry.silver_table,
        registry.freshness_warn_after_hours,
        registry.freshness_error_after_hours,

        coalesce(loads.batch_count, 0)      as batch_count,
        coalesce(loads.file_count, 0)       as file_count,
        coalesce(loads.rows_loaded, 0)      as rows_loaded,
        coalesce(loads.bytes_loaded, 0)     as bytes_loaded,
        loads.first_loaded_at_utc,
        loads.last_loaded_at_utc,
        loads.last_watermark,

        {{ freshness_as_of() }}             as as_of_utc,
        -- seconds since the newest load (NULL: never loaded)
        date_diff('second', loads.last_loaded_at_utc, {{ freshness_as_of() }})
                                            as lag_seconds

    from registry
    left join loads using (source)

),

final as (

    select
        source,
        department,
        source_kind,
        tags,
        connector_type,
        schedule,
        silver_table,
        freshness_warn_after_hours,
        freshness_error_after_hours,
        batch_count,
        file_count,
        rows_loaded,
        bytes_loaded,
        first_loaded_at_utc,
        last_loaded_at_utc,
        last_watermark,
        as_of_utc,
        round(lag_seconds / 3600.0, 3)                                      as lag_hours,
        -- positive: hours later than the registry expects; negative: hours left before it is late
        round((lag_seconds - freshness_warn_after_hours * 3600) / 3600.0, 3) as lag_over_expected_hours,
        case
            when last_loaded_at_utc is null then 'never_loaded'
            -- the thresholds themselves still count as in time, like dbt source freshness;
            -- compared in seconds, not in the rounded hours
            when lag_seconds <= freshness_warn_after_hours * 3600 then 'fresh'
            when lag_seconds <= freshness_error_after_hours * 3600 then 'warn'
            else 'error'
        end                                                                 as freshness_status
    from measured

)

select * from final
