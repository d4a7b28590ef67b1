-- One row per safety hazard (inspection finding) with its rectification lifecycle and the flags the
-- closed loop is measured by. The rules are silver's (spark_jobs/silver_hazard.py), recomputed here from
-- the dates so they are visible and unit-tested; stg_silver__hazard's tests pin silver's own flags to
-- the same rules.
--
--   as_of_date            one date for the whole table: silver's as_of_date (the latest local date of
--                         any hazard's update), never the wall clock
--   closed_date           rectified_date, else accepted_date (an acceptance implies a rectification)
--   is_overdue_open       not closed and rectify_deadline < as_of_date: the deadline day itself is in time
--   is_closed_late        closed_date > rectify_deadline; FALSE while open; NULL closed without deadline
--   is_rectified_on_time  closed_date <= rectify_deadline; FALSE while open; NULL closed without deadline

with

hazards as (

    select * from {{ ref('stg_silver__hazard') }}

),

as_of as (

    select max(as_of_date) as as_of_date from hazards

),

dated as (

    select
        hazards.*,
        as_of.as_of_date                                        as table_as_of_date,
        coalesce(hazards.rectified_date, hazards.accepted_date) as closed_date

    from hazards
    cross join as_of

),

flagged as (

    select
        *,
        closed_date is not null                                 as is_closed_now,
        case when closed_date is null then false
             else closed_date > rectify_deadline end            as is_closed_late_now,
        case when closed_date is null then false
             else closed_date <= rectify_deadline end           as is_rectified_on_time_now,
        closed_date is null
            and coalesce(rectify_deadline < table_as_of_date, false) as is_overdue_open_now

    from dated

),

final as (

    select
        -- ids
        hazard_id,
        source,
        enterprise_id,
        enterprise_match,

        -- place
        district_code,
        h3_cell,

        -- classification
        source_code,
        domain_code,
        category_code,
        subcategory_code,
        severity,

        -- lifecycle dates (local calendar days)
        found_date,
        cast(date_trunc('quarter', found_date) as date)         as found_quarter,
        year(found_date) || '-Q' || quarter(found_date)         as found_quarter_label,
        rectify_deadline,
        rectified_date,
        accepted_date,
        closed_date,
        status,
        table_as_of_date                                        as as_of_date,

        -- flags as of as_of_date
        is_closed_now                                           as is_closed,
        is_rectified_on_time_now                                as is_rectified_on_time,
        is_closed_late_now                                      as is_closed_late,
        is_overdue_open_now                                     as is_overdue_open,
        coalesce(is_closed_late_now or is_overdue_open_now, false) as is_overdue,
        case
            when is_rectified_on_time_now then 'rectified_on_time'
            when is_closed_late_now       then 'closed_late'
            when is_closed_now            then 'closed_without_deadline'
            when is_overdue_open_now      then 'overdue_open'
            when rectify_deadline is null then 'open_without_deadline'
            else 'open_within_deadline'
        end                                                     as rectification_state,

        -- days past the deadline: closed late -> closed_date, still open -> as_of_date
        case
            when is_closed_late_now  then cast(closed_date - rectify_deadline as integer)
            when is_overdue_open_now then cast(table_as_of_date - rectify_deadline as integer)
        end                                                     as days_past_deadline,

        -- cycle times in days (NULL until the later step happened)
        cast(rectified_date - found_date as integer)            as days_found_to_rectified,
        cast(accepted_date - rectified_date as integer)         as days_rectified_to_accepted,
        cast(accepted_date - found_date as integer)             as days_found_to_accepted,
        cast(rectify_deadline - found_date as integer)          as days_allowed,

        -- lineage
        updated_at_utc,
        ingested_at_utc

    from flagged

)

select * from final
order by found_date, hazard_id
