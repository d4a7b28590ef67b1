-- Per source and silver table: the rows published to silver (current state: one row per record key,
-- at its newest version). Each source feeds exactly one silver table (sources/<source>.yaml, silver.table).

{%- set published_tables = [
    ('incident', 'stg_silver__incident'),
    ('hazard', 'stg_silver__hazard'),
    ('enterprise', 'stg_silver__enterprise'),
    ('device', 'stg_silver__device'),
    ('device_reading', 'stg_silver__device_reading'),
    ('weather_daily', 'stg_silver__weather_daily'),
] %}

with

{% for silver_table, model in published_tables %}
{{ silver_table }}_rows as (

    select
        source,
        '{{ silver_table }}'    as silver_table,
        count(*)                as rows_published
    from {{ ref(model) }}
    group by source

),

{% endfor %}
unioned as (

    {% for silver_table, _ in published_tables %}
    select * from {{ silver_table }}_rows
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

final as (

    select
        source,
        silver_table,
        cast(rows_published as bigint) as rows_published
    from unioned

)

select * from final
