-- The stewards' review queue: every code or category silver could not map, with its rows waiting and
-- what to do next. A code mapped since its rows were quarantined waits only for a silver re-run.

with

queue as (

    select * from {{ ref('stg_silver__unmapped_codes') }}

),

registry as (

    select * from {{ ref('stg_ops__source_registry') }}

),

final as (

    select
        queue.source,
        registry.department,
        queue.reason,
        queue.code,
        queue.lookup,
        queue.rows_quarantined,
        queue.first_seen_at_utc,
        queue.last_seen_at_utc,
        queue.example_source_record_id,
        queue.example_detail,
        queue.mapped_now,
        queue.review_note,
        case
            when queue.mapped_now is not null then 'mapped since: re-run silver'
            when queue.review_note is not null then 'decided: see review note'
            else 'to review'
        end                                                         as review_status
    from queue
    left join registry using (source)

)

select * from final
order by review_status desc, rows_quarantined desc, source, code
