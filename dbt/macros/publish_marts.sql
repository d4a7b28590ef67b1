{#-
    Copy every mart (the table and incremental models under models/marts/ and models/gold/, the model
    outputs Superset's risk map and forecasts read) from the DuckDB warehouse just built into the
    attached PostgreSQL database (alias `prod_postgres`, target `prod` in profiles.yml), atomically:

      one transaction:  <schema>__publishing is (re)created and filled with the marts,
                        <schema> is dropped and <schema>__publishing renamed to <schema>.

    Readers of <schema> see the old marts until the COMMIT and the new ones after it; a failure rolls
    everything back and leaves <schema> as it was. Run by citysafe.warehouse after `dbt build --target
    prod` passed:  dbt run-operation publish_marts --target prod --args '{schema: marts}'
-#}
{% macro publish_marts(schema='marts', attach_alias='prod_postgres') %}
    {%- if not modules.re.fullmatch('[a-z_][a-z0-9_]{0,46}', schema) -%}
        {{ exceptions.raise_compiler_error("publish_marts: schema must be a lower-case identifier, got " ~ schema) }}
    {%- endif -%}
    {%- set staging_schema = schema ~ '__publishing' -%}
    {%- set marts = [] -%}
    {%- for node in graph.nodes.values() | sort(attribute='name') -%}
        {%- if node.resource_type == 'model' and node.fqn[1] in ('marts', 'gold') and node.config.materialized in ('table', 'incremental') -%}
            {%- do marts.append(node) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if marts | length == 0 -%}
        {{ exceptions.raise_compiler_error("publish_marts: the project has no mart tables") }}
    {%- endif -%}

    {%- set sql -%}
        begin transaction;
        call postgres_execute('{{ attach_alias }}', 'drop schema if exists "{{ staging_schema }}" cascade; create schema "{{ staging_schema }}"');
        call pg_clear_cache();
        {%- for node in marts %}
        create table {{ attach_alias }}."{{ staging_schema }}"."{{ node.alias }}" as select * from {{ node.relation_name }};
        {%- endfor %}
        -- inside the transaction: every copy must hold exactly the rows of its mart, or nothing commits
        {%- for node in marts %}
        select case when (select count(*) from {{ attach_alias }}."{{ staging_schema }}"."{{ node.alias }}")
                      <> (select count(*) from {{ node.relation_name }})
                    then error('publish_marts: row count of {{ node.alias }} differs in PostgreSQL') end;
        {%- endfor %}
        call postgres_execute('{{ attach_alias }}', 'drop schema if exists "{{ schema }}" cascade; alter schema "{{ staging_schema }}" rename to "{{ schema }}"');
        commit;
    {%- endset -%}
    {%- do run_query(sql) -%}
    {{ log("published " ~ (marts | length) ~ " marts to " ~ attach_alias ~ "." ~ schema ~ ": " ~ (marts | map(attribute='alias') | join(', ')), info=true) }}
{% endmacro %}
