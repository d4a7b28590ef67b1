"""The deployment files under infra/ (Docker Compose, Dockerfile, Kubernetes, Helm values) are consistent with
each other and with the project: what can be checked without a Docker daemon or a cluster.

Every YAML file parses; compose services have an image or a build, a healthcheck unless one-shot, existing
dependencies with satisfiable conditions, every ${VAR} in .env.example and no secret in any file; images are
pinned; Airflow and Superset versions equal the lock files; the Dockerfile installs lock files that exist;
every CITYSAFE_* variable is a real configuration key and the deployed configuration loads through
citysafe.config; Kubernetes manifests are well-formed, their selectors, references and Secret template hold
together, and `kubectl kustomize` renders them (when kubectl is installed; it works offline).
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from citysafe import config as cs_config

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
COMPOSE = INFRA / "compose" / "compose.yaml"
ENV_EXAMPLE = INFRA / "compose" / ".env.example"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
K8S = INFRA / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_TEMPLATE = K8S / "secret.template.yaml"
AIRFLOW_VALUES = K8S / "airflow-values.yaml"
NOT_MANIFESTS = {KUSTOMIZATION.name, AIRFLOW_VALUES.name}

ONE_SHOT_LABEL = "org.citysafe.one-shot"
# names whose value is a secret; such a value must come from the environment or a Secret, never a literal
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|fernet|auth|_key)$")
URL_PASSWORD = re.compile(r"://[^/\s:@]*:([^@\s/]+)@")
VAR_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
NAMESPACED = {"ConfigMap", "Secret", "Service", "ServiceAccount", "Deployment", "StatefulSet", "Job"}
NAMESPACED |= {"Role", "RoleBinding", "PersistentVolumeClaim"}
# Sail 0.7.2 configuration keys the manifests set (SAIL_<SECTION>__<KEY>); each is looked up in the installed
# pysail binary below, which embeds its configuration reference.
SAIL_KEYS = {
    "mode",
    "cluster.driver_listen_host",
    "cluster.driver_external_host",
    "cluster.worker_max_count",
    "execution.default_parallelism",
    "kubernetes.image",
    "kubernetes.image_pull_policy",
    "kubernetes.namespace",
    "kubernetes.driver_pod_name",
    "kubernetes.worker_service_account_name",
    "kubernetes.worker_pod_template",
}


# --------------------------------------------------------------------------------------------- helpers


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            out[key.strip()] = value.strip()
    return out


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: $$ is a literal $, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}."""

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        val = env.get(name)
        if op in (":-", "-"):
            return arg if (val is None or (op == ":-" and val == "")) else val
        return val or ""

    parts = value.split("$$")
    return "$".join(VAR_REF.sub(one, part) for part in parts)


def _strings(node) -> list[str]:
    """Every string value of a YAML tree (what compose interpolates; comments are not)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _compose_refs() -> list[re.Match]:
    values = _strings(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))
    return [m for value in values for m in VAR_REF.finditer(value.replace("$$", ""))]


def _walk(node, path=()):
    """(path, key, value) for every mapping entry of a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_MANIFESTS)


def _pod_specs(doc: dict) -> list[dict]:
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [doc["spec"]]
    return []


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _container_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _sail_server(docs: list[dict]) -> dict:
    deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "sail-spark-server")
    return next(c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "server")


def _sail_worker_template(server: dict) -> dict:
    return json.loads(_container_env(server)["SAIL_KUBERNETES__WORKER_POD_TEMPLATE"]["value"])


def _lock_pins(path: Path) -> dict[str, str]:
    return {k.lower(): v for k, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", path.read_text(encoding="utf-8"), re.M)}


def _dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)", _dockerfile(), re.M))


def _image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _assert_pinned(image: str, where: str) -> None:
    tag = _image_tag(image)
    assert tag and tag != "latest", f"{where}: image {image!r} is not pinned to a version tag"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return _env_example()


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return [d for p in _manifest_files() if p != SECRET_TEMPLATE for d in _docs(p)]


def _one_shot(service: dict) -> bool:
    return (service.get("labels") or {}).get(ONE_SHOT_LABEL) == "true"


# --------------------------------------------------------------------------------------------- every file


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_parses(path):
    docs = _docs(path)
    assert docs, f"{path}: empty"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


def test_no_literal_secrets_in_deployment_files():
    problems = []
    for path in _yaml_files():
        for doc in _docs(path):
            for where, key, value in _walk(doc):
                k = str(key)
                if isinstance(value, str):
                    if SECRET_NAME.search(k) and value and "${" not in value and path != SECRET_TEMPLATE:
                        problems.append(f"{path.name}: {'.'.join(map(str, where))}.{k} = {value!r}")
                    for m in URL_PASSWORD.finditer(value):
                        if not m.group(1).startswith("${"):
                            problems.append(f"{path.name}: a password in the URL of {k}")
                # k8s env lists: {name: ..._PASSWORD, value: literal}
                if k == "name" and isinstance(value, str) and SECRET_NAME.search(value):
                    parent = doc
                    for step in where:
                        parent = parent[step]
                    literal = parent.get("value")
                    if isinstance(literal, str) and literal and "${" not in literal:
                        problems.append(f"{path.name}: env {value} has a literal value")
    assert problems == []


def test_env_example_holds_no_secret_values(env_example):
    filled = [k for k, v in env_example.items() if SECRET_NAME.search(k) and v]
    assert filled == [], f".env.example must leave every secret empty: {filled}"
    assert {"CITYSAFE_PII_KEY", "SUPERSET_SECRET_KEY", "AIRFLOW_FERNET_KEY", "POSTGRES_PASSWORD"} <= set(env_example)


def test_env_file_is_git_ignored():
    ignored = (INFRA / "compose" / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored


def test_scripts_are_executable_shell():
    scripts = [*sorted((INFRA / "docker").glob("*.sh")), K8S / "postgres" / "init-databases.sh"]
    assert len(scripts) >= 4
    for script in scripts:
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n"), script
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def test_readmes_point_at_existing_files():
    text = (INFRA / "README.md").read_text(encoding="utf-8")
    paths = set(
        re.findall(r"(?<![\w./-])((?:infra|scripts|dags|pipeline|dashboards|config|requirements)/[\w./-]*\w)", text)
    )
    assert paths, "infra/README.md names no file"
    generated = {"infra/compose/.env"}  # the filled-in env file, never committed
    missing = sorted(p for p in paths - generated if not (REPO / p).exists())
    assert missing == []
    assert "infra/README.md" in (REPO / "README.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------- Docker Compose


def test_compose_services_have_an_image_and_a_healthcheck(services):
    assert {"minio", "minio-init", "postgres", "redis", "sail", "airflow-apiserver", "airflow-scheduler"} <= set(
        services
    )
    assert {"airflow-dag-processor", "airflow-triggerer", "airflow-worker", "superset"} <= set(services)
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
        if _one_shot(service):
            assert service.get("restart") == "no", f"{name}: a one-shot job must not restart"
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"{name}: no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name}: a long-running service should restart"


def test_compose_dependencies_exist_and_can_be_met(services):
    graph = {}
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions (the long form)"
        graph[name] = set(deps)
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target} to be healthy: no healthcheck"
            elif condition == "service_completed_successfully":
                assert _one_shot(services[target]), f"{name} waits for {target} to complete: not a one-shot job"
            else:
                pytest.fail(f"{name} -> {target}: condition {condition!r} (use service_healthy or _completed)")
            if not service.get("profiles"):
                assert not services[target].get("profiles"), f"{name} (always on) depends on profiled {target}"
    # no cycles
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            pytest.fail(f"dependency cycle: {' -> '.join([*trail, node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in graph[node]:
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_compose_variables_are_all_in_env_example(env_example):
    used = {m.group(1) or m.group(4) for m in _compose_refs()}
    assert used, "compose.yaml uses no variable?"
    assert sorted(used - set(env_example)) == [], "variables missing from .env.example"
    assert sorted(set(env_example) - used) == [], ".env.example entries compose.yaml does not use"


def test_compose_secrets_are_required_not_defaulted():
    for m in _compose_refs():
        name = m.group(1) or m.group(4)
        if SECRET_NAME.search(name):
            assert m.group(2) == ":?", f"${{{name}}} must be required (${{{name}:?...}}), found {m.group(0)}"


def test_compose_volumes_are_named(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith((".", "/")):  # a file of this repository
                assert (COMPOSE.parent / source).resolve().is_file(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_compose_images_are_pinned(services, env_example):
    for name, service in services.items():
        image = _interpolate(service.get("image", ""), env_example)
        assert image, f"{name}: no image name (give built images a name and tag)"
        _assert_pinned(image, f"compose {name}")


def _pipeline_envs(services, env_example) -> dict[str, dict[str, str]]:
    out = {}
    for name, service in services.items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        if any(k.startswith("CITYSAFE_") for k in env) and "CITYSAFE_ENGINE" in env:
            out[name] = {k: _interpolate(str(v), env_example) for k, v in env.items()}
    return out


def _check_config_keys(names, where):
    known = set(cs_config.Settings.model_fields) - {"config_file"}
    for name in names:
        if not name.startswith(cs_config.ENV_PREFIX) or name in cs_config._NON_KEY_ENV or name == "CITYSAFE_PII_KEY":
            continue
        first = name[len(cs_config.ENV_PREFIX) :].split("__")[0].lower()
        assert first in known, f"{where}: {name} is not a configuration key (citysafe/config.py)"


def test_compose_citysafe_variables_are_config_keys(services):
    for name, service in services.items():
        _check_config_keys(service.get("environment") or {}, f"compose {name}")


def test_compose_pipeline_configuration_loads(services, env_example):
    envs = _pipeline_envs(services, env_example)
    assert {"airflow-worker", "citysafe"} <= set(envs)
    for name, env in envs.items():
        settings = cs_config.load_settings(environ=env)  # raises ConfigError on a bad key or value
        assert settings.engine == "sc://sail:50051", name
        assert settings.warehouse_path == Path("/data/warehouse/citysafe_marts.duckdb")
        assert settings.mlflow_root == Path("/data/mlflow")
        assert settings.alerts.clock == "now"
        assert settings.superset.warehouse_uri.startswith("postgresql+psycopg2://superset_reader@")
        assert env["CITYSAFE_LAKE_ROOT"].startswith("s3://")
        assert env["CITYSAFE_PII_KEY"] == "" and env_example["CITYSAFE_PII_KEY"] == ""  # from the env file only


def test_compose_airflow_matches_the_dags_contract(services):
    support = _dag_support()
    worker = services["airflow-worker"]["environment"]
    assert worker["CITYSAFE_BIN"] == "/opt/citysafe/.venv/pipeline/bin/citysafe"
    assert worker["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/citysafe/dags"
    assert worker["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert support.CITYSAFE_BIN_ENV == "CITYSAFE_BIN"
    # the pool every lake-writing task runs in is created where the metadata DB is migrated
    pool = f"pools set {support.LAKE_POOL} {support.LAKE_POOL_SLOTS}"
    assert pool in (INFRA / "docker" / "airflow-entrypoint.sh").read_text(encoding="utf-8")
    assert pool in " ".join(yaml.safe_load(AIRFLOW_VALUES.read_text(encoding="utf-8"))["migrateDatabaseJob"]["args"])
    assert services["airflow-init"]["command"] == ["init"]
    for name, service in services.items():
        if name.startswith("airflow-") and name != "airflow-init":
            assert "airflow-init" in service["depends_on"], f"{name} must wait for the migrations"


def _dag_support():
    """dags/citysafe_dag_support.py (plain data, no Airflow import), loaded by path: dags/ is not a package."""
    name = "citysafe_dag_support_for_infra_test"
    spec = importlib.util.spec_from_file_location(name, REPO / "dags" / "citysafe_dag_support.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_docker_compose_config_validates(tmp_path, env_example):
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True) if docker else None
    if probe is None or probe.returncode != 0:
        pytest.skip("`docker compose version` fails here (no compose plugin): compose.yaml is checked by parsing only")
    env = {k: (v or "0123456789abcdef0123456789abcdef") for k, v in env_example.items()}
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    proc = subprocess.run(
        [docker, "compose", "--env-file", str(env_file), "-f", str(COMPOSE), "--profile", "spark", "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------- images


def test_dockerfile_installs_existing_lock_files():
    text = _dockerfile()
    copied = {}
    for src, dest in re.findall(r"^COPY (?!--from)(?:--chown=\S+ )?(\S+) (\S+)$", text, re.M):
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
        copied[dest] = src
    synced = re.findall(r"uv pip sync (\S+)", text)
    assert len(synced) == 3, synced
    sources = {copied[path] for path in synced}
    assert sources == {"requirements/pipeline.txt", "requirements/superset.txt", "infra/docker/airflow-prod.txt"}
    for lock in sources:
        assert _lock_pins(REPO / lock), f"{lock}: no pinned package"
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.M))
    assert {"pipeline", "airflow", "superset", "spark-connect"} <= targets
    assert "uv pip install --no-deps -e /opt/citysafe" in text  # editable, as `make setup`: REPO_ROOT = the tree
    ignore = (INFRA / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", "var", ".git", "infra/compose/.env"} <= set(ignore)


def test_dockerfile_base_images_are_pinned():
    args = _dockerfile_args()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", _dockerfile(), re.M))
    froms = re.findall(r"^FROM (\S+)", _dockerfile(), re.M)
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if image not in stages:
            _assert_pinned(image, f"Dockerfile FROM {image}")
    for line in re.findall(r"^COPY --from=(\S+)", _dockerfile(), re.M):
        assert line in stages, f"COPY --from={line}: copy from a named stage (its image pinned by an ARG)"


def test_versions_equal_the_lock_files():
    airflow = _lock_pins(REPO / "requirements" / "airflow.txt")
    superset = _lock_pins(REPO / "requirements" / "superset.txt")
    args = _dockerfile_args()
    assert args["AIRFLOW_VERSION"] == airflow["apache-airflow"]
    assert args["SUPERSET_VERSION"] == superset["apache-superset"]
    values = yaml.safe_load(AIRFLOW_VALUES.read_text(encoding="utf-8"))
    assert values["airflowVersion"] == airflow["apache-airflow"]
    prod_in = (INFRA / "docker" / "airflow-prod.in").read_text(encoding="utf-8")
    assert re.search(rf"^apache-airflow\[[a-z,]+\]=={re.escape(airflow['apache-airflow'])}$", prod_in, re.M)
    assert "-r ../../requirements/airflow.in" in prod_in
    prod = _lock_pins(INFRA / "docker" / "airflow-prod.txt")
    changed = {k: (v, prod.get(k)) for k, v in airflow.items() if prod.get(k) != v}
    assert changed == {}, "infra/docker/airflow-prod.txt must keep every pin of requirements/airflow.txt"
    assert {"apache-airflow-providers-celery", "celery", "redis", "psycopg2-binary"} <= set(prod)
    pysail = _lock_pins(REPO / "requirements" / "pipeline.txt")["pysail"]
    assert f"pysail {pysail}" in (K8S / "sail.yaml").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------- Kubernetes


def test_k8s_manifests_have_identity():
    for path in _manifest_files():
        for doc in _docs(path):
            assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: apiVersion and kind"
            assert (doc.get("metadata") or {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"
            assert "namespace" not in doc["metadata"], f"{path.name}: the namespace comes from kustomization.yaml"


def test_kustomization_lists_existing_files():
    kust = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    resources = kust["resources"]
    assert kust["namespace"] == "citysafe"
    for item in resources:
        assert (K8S / item).is_file(), f"kustomization.yaml lists {item}, which does not exist"
    expected = {p.name for p in _manifest_files()} - {SECRET_TEMPLATE.name}
    assert set(resources) == expected, "every manifest but the Secret template belongs in kustomization.yaml"
    assert SECRET_TEMPLATE.name not in resources  # applying it would blank the real Secrets
    for generator in kust.get("configMapGenerator", []):
        for entry in generator.get("files", []):
            assert (K8S / entry.split("=", 1)[-1]).is_file(), entry


def test_secret_template_has_no_values():
    docs = _docs(SECRET_TEMPLATE)
    assert docs and all(d["kind"] == "Secret" for d in docs)
    for doc in docs:
        values = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
        assert values, f"{doc['metadata']['name']}: list the keys (empty)"
        assert all(v in ("", None) for v in values.values()), f"{doc['metadata']['name']} holds values"


def _check_selectors(docs: list[dict]) -> None:
    pod_labels = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"{doc['metadata']['name']}: selector does not match its pods"
        if _pod_specs(doc):
            ports = {p.get("name") for c in _containers(_pod_specs(doc)[0]) for p in c.get("ports", [])}
            pod_labels.append((doc["spec"]["template"]["metadata"]["labels"], ports, doc["metadata"]["name"]))
    for doc in docs:
        if doc["kind"] != "Service":
            continue
        selector = doc["spec"]["selector"]
        matched = [(labels, ports, n) for labels, ports, n in pod_labels if selector.items() <= labels.items()]
        assert matched, f"Service {doc['metadata']['name']} selects no pod"
        assert len({n for _, _, n in matched}) == 1, f"Service {doc['metadata']['name']} selects several workloads"
        for port in doc["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str):
                assert target in matched[0][1], f"Service {doc['metadata']['name']}: no container port {target}"


def test_k8s_selectors_match_pod_labels(manifests):
    _check_selectors(manifests)


def test_k8s_references_resolve(manifests):
    template = _docs(SECRET_TEMPLATE)
    secrets = {d["metadata"]["name"]: set((d.get("stringData") or {}) | (d.get("data") or {})) for d in template}
    kust = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    names = {(d["kind"], d["metadata"]["name"]) for d in manifests}
    configmaps = {n for k, n in names if k == "ConfigMap"} | {g["name"] for g in kust.get("configMapGenerator", [])}
    claims = {n for k, n in names if k == "PersistentVolumeClaim"}
    accounts = {n for k, n in names if k == "ServiceAccount"}
    pods = [pod for d in manifests for pod in _pod_specs(d)]
    sail = _sail_worker_template(_sail_server(manifests))
    pods.append(sail["spec"])
    for doc in manifests:
        if doc["kind"] == "StatefulSet":
            claims |= {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
    for pod in pods:
        if "serviceAccountName" in pod:
            assert pod["serviceAccountName"] in accounts, pod["serviceAccountName"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, volume
        for container in _containers(pod):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes | claims, f"{container['name']}: mount {mount['name']} has no volume"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), f"{env['name']}: {ref} not in the template"
    for doc in manifests:
        if doc["kind"] == "RoleBinding":
            assert ("Role", doc["roleRef"]["name"]) in names
            for subject in doc["subjects"]:
                assert ("ServiceAccount", subject["name"]) in names
    # the Helm values refer to the same objects, under the keys the chart reads
    values = yaml.safe_load(AIRFLOW_VALUES.read_text(encoding="utf-8"))
    chart_keys = {
        values["data"]["metadataSecretName"]: "connection",
        values["fernetKeySecretName"]: "fernet-key",
        values["apiSecretKeySecretName"]: "api-secret-key",
        values["jwtSecretName"]: "jwt-secret",
    }
    for name, key in chart_keys.items():
        assert secrets.get(name) == {key}, f"Secret {name} must hold exactly the key {key}"
    for _, key, value in _walk(values):
        if key == "secretKeyRef":
            assert value["key"] in secrets.get(value["name"], set()), value
        if key == "claimName":
            assert value in claims, value
    assert "citysafe-config" in values["extraEnvFrom"] and "citysafe-config" in configmaps


def test_k8s_citysafe_configuration_loads(manifests):
    data = next(d for d in manifests if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "citysafe-config")["data"]
    _check_config_keys(data, "configmap citysafe-config")
    settings = cs_config.load_settings(environ=dict(data))
    assert settings.engine == "sc://sail-spark-server:50051"
    service = next(d for d in manifests if d["kind"] == "Service" and d["metadata"]["name"] == "sail-spark-server")
    assert service["spec"]["ports"][0]["port"] == 50051
    for doc in manifests:
        for pod in _pod_specs(doc):
            for container in _containers(pod):
                _check_config_keys(_container_env(container), f"{doc['metadata']['name']}/{container['name']}")
    values = yaml.safe_load(AIRFLOW_VALUES.read_text(encoding="utf-8"))
    _check_config_keys([e["name"] for e in values["env"] + values["workers"]["env"]], "airflow-values")
    assert values["config"]["core"]["dags_folder"] == "/opt/citysafe/dags"
    assert values["executor"] == "CeleryExecutor" and values["postgresql"]["enabled"] is False


def test_k8s_images_are_pinned(manifests):
    for doc in manifests:
        for pod in _pod_specs(doc):
            for container in _containers(pod):
                _assert_pinned(container["image"], f"{doc['metadata']['name']}/{container['name']}")
    _assert_pinned(_container_env(_sail_server(manifests))["SAIL_KUBERNETES__IMAGE"]["value"], "SAIL_KUBERNETES__IMAGE")
    values = yaml.safe_load(AIRFLOW_VALUES.read_text(encoding="utf-8"))
    image = values["images"]["airflow"]
    _assert_pinned(f"{image['repository']}:{image['tag']}", "airflow-values images.airflow")
    assert values["defaultAirflowTag"] == image["tag"]


def test_sail_cluster_mode_settings(manifests):
    server = _sail_server(manifests)
    env = _container_env(server)
    assert server["command"] == ["sail"] and server["args"][:2] == ["spark", "server"]
    assert env["SAIL_MODE"]["value"] == "kubernetes-cluster"
    assert env["SAIL_KUBERNETES__IMAGE"]["value"] == server["image"]
    assert env["SAIL_KUBERNETES__DRIVER_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SAIL_CLUSTER__DRIVER_EXTERNAL_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    keys = {n[len("SAIL_") :].lower().replace("__", ".") for n in env if n.startswith("SAIL_")}
    assert keys == SAIL_KEYS, f"Sail settings changed: {sorted(keys ^ SAIL_KEYS)} (check them, then update SAIL_KEYS)"
    template = _sail_worker_template(server)
    assert [c["name"] for c in template["spec"]["containers"]] == ["worker"]  # Sail's worker container name
    accounts = {d["metadata"]["name"] for d in manifests if d["kind"] == "ServiceAccount"}
    assert env["SAIL_KUBERNETES__WORKER_SERVICE_ACCOUNT_NAME"]["value"] in accounts
    role = next(d for d in manifests if d["kind"] == "Role" and d["metadata"]["name"] == "sail-spark-server")
    verbs = {v for rule in role["rules"] if "pods" in rule["resources"] for v in rule["verbs"]}
    assert {"create", "get", "list", "watch", "delete"} <= verbs
    deployment = next(
        d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == "sail-spark-server"
    )
    assert deployment["spec"]["replicas"] == 1
    binding = next(d for d in manifests if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "sail-spark-server")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] in {s["name"] for s in binding["subjects"]}


def test_sail_keys_exist_in_the_installed_pysail():
    spec = importlib.util.find_spec("pysail")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pysail is not installed in this venv")
    natives = sorted(Path(spec.submodule_search_locations[0]).glob("_native*.so"))
    if not natives:
        pytest.skip("no pysail native library found")
    with open(natives[0], "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        missing = sorted(k for k in SAIL_KEYS if blob.find(f"key: {k}\n".encode()) < 0)
    assert missing == [], f"not configuration keys of the installed pysail: {missing}"


def test_kubectl_kustomize_renders():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service", "Job", "Role", "RoleBinding"} <= kinds
    assert "Secret" not in kinds  # never rendered: the Secrets are created from values outside git
    for doc in docs:
        if doc["kind"] in NAMESPACED:
            assert doc["metadata"].get("namespace") == "citysafe", f"{doc['kind']} {doc['metadata']['name']}"
    _check_selectors(docs)
    server = _sail_server(docs)
    env = _container_env(server)
    assert env["SAIL_KUBERNETES__IMAGE"]["value"] == server["image"]
    assert env["SAIL_KUBERNETES__IMAGE_PULL_POLICY"]["value"] == "IfNotPresent"
    statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
    init = next(v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == "init")
    generated = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    assert init["configMap"]["name"] in generated  # the hashed name of the generated init-script ConfigMap
