{#-
    Wall-clock time in the city's zone (var city_timezone) of a UTC instant (TIMESTAMPTZ), as a naive
    TIMESTAMP. Local dates and weeks must come from this, never from the UTC date: 2025-01-05 17:00 UTC
    is Monday 2025-01-06 01:00 in Asia/Shanghai.
-#}
{% macro to_city_local_time(utc_instant_column) -%}
    timezone('{{ var("city_timezone") }}', cast({{ utc_instant_column }} as timestamptz))
{%- endmacro %}
