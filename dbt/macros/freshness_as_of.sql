{#-
    The instant freshness is measured at, as a TIMESTAMPTZ: the time this dbt invocation started
    (run_started_at, UTC), so the marts' lags are relative to the build. A fixed instant can be given
    with the var `freshness_as_of` (e.g. --vars '{freshness_as_of: "2025-03-01 12:00:00+00"}'), which
    makes the lags deterministic in tests.
-#}
{% macro freshness_as_of() -%}
    {%- set as_of = var('freshness_as_of', none) -%}
    {%- if as_of -%}
        cast('{{ as_of }}' as timestamptz)
    {%- else -%}
        cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}+00' as timestamptz)
    {%- endif -%}
{%- endmacro %}
