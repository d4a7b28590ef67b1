{#-
    A model's NOT NULL columns, checked in one query. When any holds NULLs the test stops with one line
    that names them and their NULL counts ("NULL values in columns: district_code (3 rows), ..."), so the
    build's error says which columns failed, as one not_null test per column did.

    Why not one `not_null` per column: dbt runs every test as its own node, ~45 ms of overhead each
    whatever the table's size; the project's 445 per-column not_null tests cost ~20 s of a daily build's
    40 s of test time. One test per model is ~50 nodes, and DuckDB counts every column's NULLs in one
    scan.
-#}
{% test not_null_columns(model, column_names) %}

with

null_counts as (

    select
        {%- for column in column_names %}
        count(*) filter (where {{ adapter.quote(column) }} is null) as {{ adapter.quote(column) }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ model }}

),

columns_with_nulls as (

    select column_name, null_rows
    from null_counts
    unpivot (null_rows for column_name in (
        {%- for column in column_names %}{{ adapter.quote(column) }}{{ ", " if not loop.last }}{% endfor -%}
    ))
    where null_rows > 0

),

message as (

    select
        'NULL values in columns: '
        || string_agg(column_name || ' (' || null_rows || ' rows)', ', ' order by column_name) as failure
    from columns_with_nulls
    having count(*) > 0

)

-- no row (the test passes) when no column holds NULLs; otherwise the error names them. error() sits in
-- the filter: dbt wraps the test in a count(*), which would never evaluate it in the select list.
select failure
from message
where error(failure) is null

{% endtest %}
