-- One row per distinct model run: when, on which data, with what result.

with

runs as (

    select * from {{ source('gold', 'model_run') }}

),

final as (

    select
        model_run_key,
        run_id,
        created_at,
        feature_weeks,
        hotspot_train_weeks,
        json_extract_string(published, '$.ALL.method')     as published_method_all,
        json_extract_string(published, '$.ALL.reason')     as published_reason_all,
        published,
        metrics,
        parameters,
        silver_versions,
        warehouse_build,
        mlflow_run_id

    from runs

)

select * from final
