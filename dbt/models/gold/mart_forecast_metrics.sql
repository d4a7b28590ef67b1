-- Forecast backtest metrics per method, measure and horizon, with MASE relative to seasonal naive's.

with

metrics as (

    select * from {{ source('gold', 'forecast_metric') }}

),

final as (

    select
        metrics.*,
        metrics.mase / nullif(seasonal.mase, 0)     as mase_relative_to_seasonal_naive

    from metrics
    left join metrics as seasonal
        on seasonal.measure = metrics.measure
        and seasonal.horizon = metrics.horizon
        and seasonal.method = 'seasonal_naive'

)

select * from final
