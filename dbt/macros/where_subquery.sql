{#-
    dbt's get_where_subquery, with one addition: a data test's `where` config may name the tested
    relation as __model__. dbt renders `where` when it parses the YAML, before any relation exists, so
    a filter that needs the table itself (e.g. "the hours the latest build wrote") cannot name it there.

    The incremental device models test, in an incremental build, only the rows the build wrote (each
    row carries the start of the build that wrote it, computed_at):

        where: "computed_at = (select max(computed_at) from __model__)"

    and their uniqueness only for the keys it wrote, counted over every row:

        where: "(device_id, hour_utc) in (select device_id, hour_utc from __model__
                                          where computed_at = (select max(computed_at) from __model__))"

    The other rows passed the same tests in the build that wrote them (a warehouse is published only
    when every test passed). A full build writes every row, so it tests every row. Relationship tests
    stay unfiltered: the parent may have changed under an old row.
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
