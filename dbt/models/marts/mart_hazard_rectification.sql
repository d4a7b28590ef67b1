-- The hazard closed loop (found -> deadline -> rectified -> accepted) measured per grain value.
-- One table, one row per value of one grain; `grain` says which columns identify the row:
--     city              (all hazards; no grain column set)
--     district          district_code
--     domain            domain_code
--     severity          severity
--     enterprise        district_code x enterprise_id (the district of the enterprise's hazards, so
--                       district row-level security applies)
--     quarter           found_quarter (local quarter of found_date)
--     district_quarter  district_code x found_quarter
-- Columns of the other grains are NULL. Hazards are counted in the cohort of their found_date; every
-- flag is evaluated as of the single as_of_date of fct_hazard.

with

hazards as (

    select * from {{ ref('fct_hazard') }}

),

aggregated as (

    select
        case
            when grouping(enterprise_id) = 0 then 'enterprise'
            when grouping(district_code) = 0 and grouping(found_quarter) = 0 then 'district_quarter'
            when grouping(district_code) = 0 then 'district'
            when grouping(domain_code) = 0   then 'domain'
            when grouping(severity) = 0      then 'severity'
            when grouping(found_quarter) = 0 then 'quarter'
            else 'city'
        end                                                         as grain,
        district_code,
        domain_code,
        severity,
        enterprise_id,
        found_quarter,
        max(as_of_date)                                             as as_of_date,

        -- counts
        count(*)                                                    as hazards_found,
        count(*) filter (where is_closed)                           as hazards_closed,
        count(*) filter (where accepted_date is not null)           as hazards_accepted,
        count(*) filter (where is_rectified_on_time)                as rectified_on_time,
        count(*) filter (where is_closed_late)                      as closed_late,
        count(*) filter (where is_overdue_open)                     as overdue_open,
        count(*) filter (where rectification_state = 'open_within_deadline') as open_within_deadline,
        count(*) filter (where rectify_deadline is null)            as without_deadline,
        count(*) filter (where is_overdue)                          as overdue_total,

        -- cycle days (continuous quantiles: the median of an even count is the mean of the middle two)
        median(days_found_to_rectified)                             as median_days_found_to_rectified,
        quantile_cont(days_found_to_rectified, 0.9)                 as p90_days_found_to_rectified,
        median(days_rectified_to_accepted)                          as median_days_rectified_to_accepted,
        quantile_cont(days_rectified_to_accepted, 0.9)              as p90_days_rectified_to_accepted,
        median(days_found_to_accepted)                              as median_days_found_to_accepted,
        quantile_cont(days_found_to_accepted, 0.9)                  as p90_days_found_to_accepted

    from hazards
    group by grouping sets (
        (),
        (district_code),
        (domain_code),
        (severity),
        (district_code, enterprise_id),
        (found_quarter),
        (district_code, found_quarter)
    )
    -- the () grouping set yields a row even over no hazards; an empty city has no figures to report
    having count(*) > 0

),

final as (

    select
        grain,
        district_code,
        domain_code,
        severity,
        enterprise_id,
        found_quarter,
        case when found_quarter is not null
             then year(found_quarter) || '-Q' || quarter(found_quarter) end as found_quarter_label,
        as_of_date,
        hazards_found,
        hazards_closed,
        hazards_accepted,
        rectified_on_time,
        closed_late,
        overdue_open,
        open_within_deadline,
        without_deadline,
        overdue_total,
        overdue_total / hazards_found                               as overdue_rate,
        overdue_open / hazards_found                                as overdue_open_rate,
        rectified_on_time / hazards_found                           as on_time_rate,
        median_days_found_to_rectified,
        p90_days_found_to_rectified,
        median_days_rectified_to_accepted,
        p90_days_rectified_to_accepted,
        median_days_found_to_accepted,
        p90_days_found_to_accepted

    from aggregated

)

select * from final
order by grain, district_code, domain_code, severity, enterprise_id, found_quarter
