"""MLflow experiment tracking with a local SQLite store under `mlflow_root` (nothing is served).

One MLflow run per distinct model run (tagged with its model_run_key: a re-run with the same inputs logs
nothing new). Logged: parameters, every method's backtest metrics, the LightGBM models; the published
LightGBM model is registered (a baseline that wins is recorded as a tag, there is no model to register).
Open the UI with `mlflow ui --backend-store-uri sqlite:///<mlflow_root>/mlflow.db` (see README).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

EXPERIMENT = "citysafe-risk-models"


def tracking_uri(mlflow_root: Path) -> str:
    return f"sqlite:///{Path(mlflow_root).resolve() / 'mlflow.db'}"


def _client(mlflow_root: Path):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_TRACKING_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import mlflow

    # MLflow installs its own handler at import; keep its INFO chatter out of the run's log
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Failed to resolve installed pip version": the requirements are given explicitly, pip is irrelevant
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)

    Path(mlflow_root).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(mlflow_root))
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifacts = (Path(mlflow_root).resolve() / "artifacts").as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def _existing_run(mlflow, model_run_key: str) -> str | None:
    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string=f"tags.model_run_key = '{model_run_key}'", output_format="list"
    )
    return runs[0].info.run_id if runs else None


def log_run(
    mlflow_root: Path,
    model_run_key: str,
    run_id: str,
    params: dict,
    metrics: dict[str, float],
    models: dict[str, object],
    published: dict[str, dict],
) -> str:
    """Log one model run; returns the MLflow run id (the existing one when this key was logged before)."""
    mlflow = _client(mlflow_root)
    found = _existing_run(mlflow, model_run_key)
    if found:
        log.info("MLflow: model run %s already logged as %s", model_run_key[:12], found)
        return found
    from mlflow import lightgbm as mlflow_lightgbm

    requirements = [f"lightgbm=={importlib.metadata.version('lightgbm')}"]
    if any(not hasattr(m, "model_to_string") for m in models.values()):  # sklearn-API models
        requirements.append(f"scikit-learn=={importlib.metadata.version('scikit-learn')}")
    with mlflow.start_run(run_name=f"{run_id}-{model_run_key[:8]}") as active:
        mlflow.set_tags({"model_run_key": model_run_key, "citysafe_run_id": run_id})
        for scope, choice in published.items():
            mlflow.set_tag(f"published.{scope}", choice["method"])
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})  # NaN dropped
        for name, model in models.items():
            registered = None
            choice = published.get(name, {})
            # the forecast publishes one method per measure: its model is registered when any measure uses it
            if choice.get("method") == "lightgbm" or "lightgbm" in choice.get("methods", {}).values():
                registered = f"citysafe-{name.lower().replace('_', '-')}"
            # explicit requirements: inferring them loads the model in a subprocess (~6 s per model)
            mlflow_lightgbm.log_model(model, name=name, registered_model_name=registered, pip_requirements=requirements)
        return active.info.run_id
