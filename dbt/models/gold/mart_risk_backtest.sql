-- How every hotspot method did in the latest rolling-origin backtest, per scope: mean scores over the
-- backtest weeks, the share of the oracle's PAI (synthetic city), and which method was published.

with

scores as (

    select * from {{ source('gold', 'risk_backtest_score') }}

),

runs as (

    select * from {{ source('gold', 'model_run') }}

),

newest_run as (

    select published
    from runs
    order by created_at desc, model_run_key
    limit 1

),

summary as (

    select
        scope,
        method,
        count(*)                                    as weeks,
        min(target_week_start)                      as first_target_week,
        max(target_week_start)                      as last_target_week,
        avg(pai_1)                                  as pai_1,
        avg(pai_5)                                  as pai_5,
        avg(pai_10)                                 as pai_10,
        avg(pei_1)                                  as pei_1,
        avg(pei_5)                                  as pei_5,
        avg(pei_10)                                 as pei_10,
        avg(hit_rate_5)                             as hit_rate_5,
        avg(poisson_deviance)                       as poisson_deviance,
        avg(spearman_truth)                         as spearman_truth

    from scores
    group by scope, method

),

final as (

    select
        summary.*,
        summary.pai_5 / nullif(oracle.pai_5, 0)     as pai_5_share_of_oracle,
        coalesce(
            json_extract_string(newest_run.published, '$.' || summary.scope || '.method') = summary.method,
            false
        )                                           as is_published

    from summary
    left join summary as oracle
        on oracle.scope = summary.scope
        and oracle.method = 'oracle'
    cross join newest_run

)

select * from final
