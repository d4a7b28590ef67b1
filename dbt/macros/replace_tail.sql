{#-
    Incremental strategy `replace_tail` (config incremental_strategy='replace_tail'), for a time series
    per entity whose rows depend on the entity's earlier rows (running state such as the device alert
    hysteresis): the batch holds, for every entity it names, ALL of that entity's rows from some point
    on. unique_key is the grain, entity columns first and the ordering column last, e.g.
    ['device_id', 'hour_utc'].

    For every entity in the batch, the target's rows at or after the batch's first ordering value are
    deleted and the batch inserted, in one transaction (dbt's). Unlike delete+insert on the grain, a row
    of the tail that the new batch no longer has is removed too. Entities absent from the batch keep
    every row. A batch row whose ordering column is NULL marks an entity that is gone: all its rows are
    deleted and the marker is not inserted.
-#}
{% macro get_incremental_replace_tail_sql(arg_dict) %}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set batch = arg_dict['temp_relation'] -%}
    {%- set grain = arg_dict['unique_key'] -%}
    {%- if grain is string or grain is none or grain | length < 2 -%}
        {{ exceptions.raise_compiler_error(
            "replace_tail: unique_key must list the entity column(s) and then the ordering column, e.g. "
            ~ "['device_id', 'hour_utc']; got " ~ grain) }}
    {%- endif -%}
    {%- set entity_columns = grain[:-1] -%}
    {%- set order_column = grain[-1] -%}
    {%- set columns_csv = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}

    delete from {{ target }} as existing
    using (
        select {{ entity_columns | join(', ') }}, min({{ order_column }}) as replace_from
        from {{ batch }}
        group by {{ entity_columns | join(', ') }}
    ) as replaced
    where
        {%- for column in entity_columns %}
        existing.{{ column }} = replaced.{{ column }} and
        {%- endfor %}
        (replaced.replace_from is null or existing.{{ order_column }} >= replaced.replace_from);

    insert into {{ target }} ({{ columns_csv }})
    select {{ columns_csv }}
    from {{ batch }}
    where {{ order_column }} is not null
{% endmacro %}
