{#-
    dbt's get_where_subquery, with one addition: a data test's `where` config may name the tested
    relation as __model__. dbt renders `where` when it parses the YAML, before any relation exists, so
    a filter that needs the table itself (e.g. "the hours the latest build wrote") cannot name it there.

    The incremental device models test, in an incremental build, only the rows at or after the
    earliest hour the build wrote (every row a build writes carries its start, computed_at):

        where: "hour_utc >= (select min(hour_utc) from __model__
                             where computed_at = (select max(computed_at) from __model__))"

    The rows before that hour passed the same tests in the build that wrote them (a warehouse is
    published only when every test passed), and a row the build wrote can only collide with a row of
    the same device and hour, which lies after that hour too. A full build writes every row, so it
    tests every row.
-#}
{% macro default__get_where_subquery(relation) -%}
    {% set where = config.get('where', '') %}
    {% if where %}
        {%- set where = where | replace('__model__', relation | string) -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {% do return(filtered) %}
    {%- else -%}
        {% do return(relation) %}
    {%- endif -%}
{%- endmacro %}
