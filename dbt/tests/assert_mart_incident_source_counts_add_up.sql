-- Every incident is counted in exactly one source column: the per-source columns plus
-- other_source_count add up to incident_count.
{%- set incident_sources = var('incident_sources', []) %}

select *
from {{ ref('mart_incident_district_week') }}
where incident_count <> (
    {%- for source_name in incident_sources %}
    {{ source_count_column(source_name) }} +
    {%- endfor %}
    other_source_count
)
