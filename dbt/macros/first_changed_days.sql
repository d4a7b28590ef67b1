{#-
    For an incremental model kept per entity and hour: per entity, the start of the first UTC day whose
    rows differ between `current` (what the model is computed from now) and `built` (the rows the model
    holds): a row added, gone or with any of `compared_columns` changed. Returns a query with the
    entity columns and first_changed_hour_utc; entities without a difference are absent.

    Rows are compared per entity and day by count and a sum of row hashes, not joined row by row: two
    aggregations of a few hundred thousand groups instead of a join of millions of rows. A day can only
    be reported too early (never too late), which the callers allow: everything before it is unchanged.
    DuckDB's hash() may differ between versions; citysafe.warehouse builds in full after a DuckDB upgrade.
-#}
{% macro first_changed_days(current, built, entity_columns, order_column, compared_columns) %}
    {%- set entity_csv = entity_columns | join(', ') -%}
    {%- set hashed_csv = ([order_column] + compared_columns) | join(', ') -%}
    with

    current_days as (
        select
            {{ entity_csv }},
            date_trunc('day', {{ order_column }})                   as day_utc,
            count(*)                                                as row_count,
            sum(hash({{ hashed_csv }}))                             as content_hash
        from {{ current }}
        group by all
    ),

    built_days as (
        select
            {{ entity_csv }},
            date_trunc('day', {{ order_column }})                   as day_utc,
            count(*)                                                as row_count,
            sum(hash({{ hashed_csv }}))                             as content_hash
        from {{ built }}
        group by all
    )

    select
        {%- for column in entity_columns %}
        coalesce(current_days.{{ column }}, built_days.{{ column }})  as {{ column }},
        {%- endfor %}
        min(coalesce(current_days.day_utc, built_days.day_utc))     as first_changed_hour_utc
    from current_days
    full outer join built_days
        on {% for column in entity_columns -%}
        built_days.{{ column }} = current_days.{{ column }} and {% endfor -%}
        built_days.day_utc = current_days.day_utc
    where current_days.row_count is distinct from built_days.row_count
        or current_days.content_hash is distinct from built_days.content_hash
    group by all
{% endmacro %}
