{#- The lineage every silver row carries from bronze (spark_jobs/tables.LINEAGE), renamed for staging:
    which landing batch, file and record it came from, and when it was loaded. -#}
{% macro silver_lineage_columns() -%}
        cast(_batch_id as varchar)              as batch_id,
        cast(_source_file as varchar)           as source_file,
        cast(_source_row_number as bigint)      as source_row_number,
        cast(_ingested_at as timestamptz)       as ingested_at_utc
{%- endmacro %}
