-- One row per registered IoT device: what it measures, where it stands, who operates it, how its
-- readings are graded and the span of hours it has reported.

with

devices as (

    select * from {{ ref('stg_silver__device') }}

),

thresholds as (

    select * from {{ ref('device_alert_thresholds') }}

),

hourly as (

    select * from {{ ref('stg_silver__device_reading_hourly') }}

),

reporting as (

    select
        device_id,
        min(hour_utc)                                                       as first_reading_hour_utc,
        max(hour_utc)                                                       as last_reading_hour_utc,
        count(*) filter (where not is_gap)                                  as hours_with_reading,
        count(*) filter (where is_gap)                                      as gap_hours
    from hourly
    group by device_id

),

final as (

    select
        devices.device_id,
        devices.device_type,
        devices.model,
        devices.canonical_unit,
        devices.registry_unit,

        devices.district_code,
        devices.lon,
        devices.lat,
        devices.h3_cell,
        devices.location_quality,

        devices.installed_date,
        devices.clock_skew_seconds,
        devices.clock_skew_seconds is not null                              as is_clock_skew_known,
        devices.owner_organisation,

        thresholds.measure                                                  as alert_measure,
        thresholds.direction                                                as alert_direction,
        thresholds.unit                                                     as alert_threshold_unit,

        reporting.first_reading_hour_utc,
        reporting.last_reading_hour_utc,
        coalesce(reporting.hours_with_reading, 0)                           as hours_with_reading,
        coalesce(reporting.gap_hours, 0)                                    as gap_hours,

        devices.updated_at_utc                                              as registry_updated_at_utc

    from devices
    left join thresholds
        on devices.device_type = thresholds.device_type
    left join reporting
        on devices.device_id = reporting.device_id

)

select * from final
