-- Every incident record with the real-world event it belongs to, and which record speaks for the event.
--
-- Silver incident_link links a report (hotline ticket) to the department record (police case, fire/EMS
-- call) of the same event; event_id is that department record's incident_id. A record without a link
-- is an event of its own (event_id = its incident_id). Links are one hop: a department record is never
-- itself a report (tested in the YAML), so no transitive closure is needed.
--
-- Primary record of an event (deterministic), in this order:
--   1. the record whose incident_id IS the event_id (the department's own record of the event);
--   2. otherwise (that record is not in silver): the earliest occurred_at_utc;
--   3. then the smallest incident_id.

-- A table, not a view: fct_incident and this model's ~25 data tests read it, and as a view each of
-- them would repeat the joins and the window over every incident record (most of a full build's test time).
{{ config(materialized='table') }}

with

incidents as (

    select * from {{ ref('stg_silver__incident') }}

),

links as (

    select * from {{ ref('stg_silver__incident_link') }}

),

linked_targets as (

    select distinct linked_incident_id as incident_id
    from links

),

with_event as (

    select
        incidents.*,
        coalesce(links.event_id, incidents.incident_id)         as event_id,
        links.incident_id is not null                           as is_linked_report,
        linked_targets.incident_id is not null                  as is_linked_target,

        -- local time from the UTC instant in the city's zone (weeks start on the LOCAL Monday)
        {{ to_city_local_time('incidents.occurred_at_utc') }}   as event_time_local

    from incidents
    left join links
        on links.incident_id = incidents.incident_id
    left join linked_targets
        on linked_targets.incident_id = incidents.incident_id

),

ranked as (

    select
        *,
        row_number() over (
            partition by event_id
            order by
                (incident_id = event_id) desc,
                occurred_at_utc,
                incident_id
        )                                                       as event_record_rank,
        count(*) over (partition by event_id)                   as event_record_count

    from with_event

),

final as (

    select
        -- ids
        incident_id,
        event_id,
        source,
        source_record_id,
        event_record_rank,
        event_record_rank = 1                                   as is_primary_record,
        event_record_count,
        is_linked_report,
        is_linked_target,

        -- classification
        domain_code,
        category_code,
        subcategory_code,
        severity,
        classification_confidence,

        -- time
        occurred_at_utc,
        event_time_local                                        as occurred_at_local,
        cast(event_time_local as date)                          as occurred_date_local,
        {{ local_week_start('event_time_local') }}              as week_start_local,
        received_at_utc,
        dispatched_at_utc,
        on_scene_at_utc,

        -- place
        district_code,
        h3_cell,
        location_quality,

        -- state
        status,
        updated_at_utc

    from ranked

)

select * from final
