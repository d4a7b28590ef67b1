-- Per source and quarantine reason: how many records were held back, and what share of the records read.

with

loads as (

    select * from {{ ref('int_source_loads') }}

),

registry as (

    select * from {{ ref('stg_ops__source_registry') }}

),

quarantine as (

    select * from {{ ref('stg_silver__quarantine') }}

),

by_reason as (

    select
        source,
        reason,
        count(*)                as rows_quarantined,
        min(ingested_at_utc)    as first_quarantined_batch_at_utc,
        max(ingested_at_utc)    as last_quarantined_batch_at_utc
    from quarantine
    group by source, reason

),

final as (

    select
        by_reason.source,
        registry.department,
        by_reason.reason,
        by_reason.rows_quarantined,
        coalesce(loads.rows_loaded, 0)                                      as rows_read,
        by_reason.rows_quarantined / nullif(coalesce(loads.rows_loaded, 0), 0) as quarantine_rate,
        by_reason.first_quarantined_batch_at_utc,
        by_reason.last_quarantined_batch_at_utc
    from by_reason
    left join registry using (source)
    left join loads using (source)

)

select * from final
