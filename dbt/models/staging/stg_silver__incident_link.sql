-- Cross-department links: a report (e.g. a 12345 hotline ticket) that duplicates a department's own
-- record (police case, fire/EMS call) of the same real event.

with

source as (

    select * from {{ source('silver', 'incident_link') }}

),

renamed as (

    select
        -- ids
        cast(incident_id as varchar)            as incident_id,
        cast(linked_incident_id as varchar)     as linked_incident_id,
        cast(event_id as varchar)               as event_id,

        -- why they were linked
        cast(distance_m as double)              as distance_m,
        cast(minutes_apart as double)           as minutes_apart,
        cast(link_rule as varchar)              as link_rule

    from source

)

select * from renamed
