-- Per registered source: how many records the lake read, published and quarantined, the quarantine rate
-- and its main reason, and the outcome of the source's newest quality gate (Great Expectations).

with

registry as (

    select * from {{ ref('stg_ops__source_registry') }}

),

loads as (

    select * from {{ ref('int_source_loads') }}

),

published as (

    select * from {{ ref('int_source_published_rows') }}

),

quarantine as (

    select * from {{ ref('stg_silver__quarantine') }}

),

validation_results as (

    select * from {{ ref('stg_silver__validation_result') }}

),

quarantine_by_reason as (

    select
        source,
        reason,
        count(*) as rows_quarantined,
        -- 1 = the most frequent reason; ties go to the alphabetically first, so reruns agree
        row_number() over (partition by source order by count(*) desc, reason) as reason_rank
    from quarantine
    group by source, reason

),

quarantine_per_source as (

    select
        source,
        cast(sum(rows_quarantined) as bigint)                   as rows_quarantined,
        cast(count(*) as bigint)                                as quarantine_reason_count,
        any_value(reason) filter (where reason_rank = 1)            as top_quarantine_reason,
        any_value(rows_quarantined) filter (where reason_rank = 1)  as top_quarantine_reason_rows
    from quarantine_by_reason
    group by source

),

validations as (

    -- one validation = one suite run on one source's staged rows (all its rows share validated_at)
    select
        source,
        suite,
        run_id,
        validated_at_utc,
        count(*)                                as expectation_count,
        count(*) filter (where not is_success)  as failed_expectation_count
    from validation_results
    group by source, suite, run_id, validated_at_utc

),

latest_validation as (

    select *
    from validations
    qualify row_number() over (partition by source order by validated_at_utc desc, suite, run_id) = 1

),

final as (

    select
        registry.source,
        registry.department,
        registry.silver_table,

        coalesce(loads.rows_loaded, 0)                          as rows_read,
        coalesce(loads.malformed_rows_loaded, 0)                as rows_malformed,
        -- bronze-only sources publish nothing to silver: NULL, not 0
        case when registry.silver_table is not null
             then coalesce(published.rows_published, 0) end     as rows_published,
        coalesce(quarantine_per_source.rows_quarantined, 0)     as rows_quarantined,
        -- duplicate deliveries and older revisions merged into the newest version of their record
        -- (plus rows silver has not processed yet)
        case when registry.silver_table is not null
             then coalesce(loads.rows_loaded, 0)
                  - coalesce(published.rows_published, 0)
                  - coalesce(quarantine_per_source.rows_quarantined, 0) end
                                                                as rows_deduplicated,
        coalesce(quarantine_per_source.rows_quarantined, 0)
            / nullif(coalesce(loads.rows_loaded, 0), 0)         as quarantine_rate,
        coalesce(quarantine_per_source.quarantine_reason_count, 0) as quarantine_reason_count,
        quarantine_per_source.top_quarantine_reason,
        quarantine_per_source.top_quarantine_reason_rows
            / nullif(coalesce(loads.rows_loaded, 0), 0)         as top_quarantine_reason_rate,

        latest_validation.validated_at_utc                      as last_validated_at_utc,
        latest_validation.run_id                                as last_validation_run_id,
        latest_validation.suite                                 as last_validation_suite,
        latest_validation.expectation_count                     as last_validation_expectations,
        latest_validation.failed_expectation_count              as last_validation_failed_expectations,
        case
            when latest_validation.source is null then 'not_validated'
            when latest_validation.failed_expectation_count = 0 then 'passed'
            else 'failed'
        end                                                     as last_validation_status

    from registry
    left join loads using (source)
    left join published
        on published.source = registry.source
        and published.silver_table = registry.silver_table
    left join quarantine_per_source using (source)
    left join latest_validation using (source)

)

select * from final
