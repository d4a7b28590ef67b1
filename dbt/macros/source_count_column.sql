{#- Column name for the per-source incident count, e.g. police_incidents -> police_incidents_count. -#}
{% macro source_count_column(source_name) -%}
    {{ adapter.quote(modules.re.sub('[^a-z0-9_]', '_', source_name | lower) ~ '_count') }}
{%- endmacro %}
