-- Unified incidents: ONE ROW PER REAL-WORLD EVENT, over every department.
-- Records that several departments made of the same event (a police case or fire/EMS call plus the
-- hotline tickets silver incident_link ties to it) collapse into one row. The event is described by its
-- primary record (rule in int_incident_event_records); every record's id is kept in source_incident_ids.

with

event_records as (

    select * from {{ ref('int_incident_event_records') }}

),

primary_records as (

    select * from event_records
    where is_primary_record

),

-- Most events have one record: their lists are built directly, and only the events several records
-- describe go through the ordered aggregation (sorting inside each of ~all groups was most of this
-- model's time).
single_record_events as (

    select
        event_id,
        [incident_id]                                           as source_incident_ids,
        cast(1 as bigint)                                       as source_record_count,
        [source]                                                as sources,
        cast(1 as bigint)                                       as source_count,
        updated_at_utc                                          as last_updated_at_utc

    from event_records
    where event_record_count = 1

),

multi_record_events as (

    select
        event_id,
        -- primary first, then the event's other records in rank order
        list(incident_id order by event_record_rank)            as source_incident_ids,
        count(*)                                                as source_record_count,
        list(distinct source order by source)                   as sources,
        count(distinct source)                                  as source_count,
        max(updated_at_utc)                                     as last_updated_at_utc

    from event_records
    where event_record_count > 1
    group by event_id

),

event_sources as (

    select * from single_record_events
    union all
    select * from multi_record_events

),

final as (

    select
        -- ids
        primary_records.event_id,
        primary_records.incident_id                             as primary_incident_id,
        primary_records.source                                  as primary_source,
        primary_records.source_record_id                        as primary_source_record_id,
        event_sources.source_incident_ids,
        event_sources.source_record_count,
        event_sources.sources,
        event_sources.source_count,
        event_sources.source_count > 1                          as is_multi_department,

        -- classification (primary record)
        primary_records.domain_code,
        primary_records.category_code,
        primary_records.subcategory_code,
        primary_records.severity,
        primary_records.classification_confidence,

        -- time (primary record)
        primary_records.occurred_at_utc,
        primary_records.occurred_at_local,
        primary_records.occurred_date_local,
        primary_records.week_start_local,
        primary_records.received_at_utc,
        primary_records.dispatched_at_utc,
        primary_records.on_scene_at_utc,

        -- place (primary record)
        primary_records.district_code,
        primary_records.h3_cell,
        primary_records.location_quality,

        -- state
        primary_records.status                                  as primary_status,
        event_sources.last_updated_at_utc

    from primary_records
    inner join event_sources
        on event_sources.event_id = primary_records.event_id

)

select * from final
