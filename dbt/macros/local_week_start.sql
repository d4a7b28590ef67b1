{#-
    Monday of the week that contains a LOCAL calendar date (ISO weeks start on Monday).
    Pass the local date (e.g. occurred_date_local), never a UTC timestamp: an incident on Sunday 23:30
    local time is in the week that ends that Sunday even when it is already Monday in UTC, and vice versa.
-#}
{% macro local_week_start(local_date_column) -%}
    cast(date_trunc('week', cast({{ local_date_column }} as date)) as date)
{%- endmacro %}
