-- Incidents per district, local week and domain, from every department in the silver incident table.
-- week_start is the Monday of the LOCAL date the incident occurred on (occurred_date_local).

{%- set incident_sources = var('incident_sources', []) %}

with

incidents as (

    select * from {{ ref('stg_silver__incident') }}

),

weekly as (

    select
        district_code,
        {{ local_week_start('occurred_date_local') }} as week_start,
        domain_code,

        count(*)                                            as incident_count,
        count(distinct source)                              as source_count,
        {%- for source_name in incident_sources %}
        count(*) filter (where source = '{{ source_name }}') as {{ source_count_column(source_name) }},
        {%- endfor %}
        count(*) filter (
            where source not in (
                {%- for source_name in incident_sources %}'{{ source_name }}'{{ ", " if not loop.last }}{% endfor -%}
                {%- if not incident_sources %}''{% endif -%}
            )
        )                                                   as other_source_count

    from incidents
    group by 1, 2, 3

)

select * from weekly
order by week_start, district_code, domain_code
