{#-
    For an incremental model kept per device and hour (strategy replace_tail): per device, the first hour
    of `current` whose `stamp` is newer than the newest `built_stamp` the model holds (`built`), and every
    device the model holds that `current` no longer has (from -infinity: all its rows go). Returns a query
    with device_id and first_changed_hour_utc.

    Sound when the stamps only grow: silver stamps what its MERGEs insert or change (`_changed_at`, under
    the lake lock, which builds hold too), and the alert state stamps what a build computed (`computed_at`,
    the build's start). A row stamped NULL predates the stamps and every build since.
-#}
{% macro first_changes(current, built, stamp, built_stamp) %}
    select
        device_id,
        min(hour_utc)                                                   as first_changed_hour_utc
    from {{ current }}
    where {{ stamp }} > (select coalesce(max({{ built_stamp }}), '-infinity'::timestamptz) from {{ built }})
    group by device_id

    union all

    select
        device_id,
        '-infinity'::timestamptz                                        as first_changed_hour_utc
    from (select distinct device_id from {{ built }}) as built_devices
    anti join {{ current }} using (device_id)
{% endmacro %}
