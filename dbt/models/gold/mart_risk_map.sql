-- The newest published risk map per scope: one row per H3 cell of the study area, with its polygon.
-- Superset draws it (deck.gl GeoJSON/polygon layer) and the quarterly report embeds it.

with

risk as (

    select * from {{ source('gold', 'risk_cell_week') }}

),

geometry as (

    select * from {{ source('gold', 'cell_geometry') }}

),

newest as (

    select scope, max(target_week_start) as target_week_start
    from risk
    group by scope

),

final as (

    select
        risk.scope,
        risk.target_week_start,
        risk.feature_week_start,
        risk.h3_cell,
        risk.district_code,
        risk.method,
        risk.expected_count,
        risk.risk_score,
        risk.percentile,
        risk.risk_rank,
        risk.risk_level,
        risk.contribution_1_feature,
        risk.contribution_1_value,
        risk.contribution_2_feature,
        risk.contribution_2_value,
        risk.contribution_3_feature,
        risk.contribution_3_value,
        geometry.centroid_lon,
        geometry.centroid_lat,
        geometry.boundary_geojson,
        risk.model_run_key

    from risk
    inner join newest
        on newest.scope = risk.scope
        and newest.target_week_start = risk.target_week_start
    left join geometry
        on geometry.h3_cell = risk.h3_cell

)

select * from final
