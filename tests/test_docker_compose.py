"""Static checks of the multi-machine deployment: docker-compose.yaml, Dockerfile, .env.example.

The dev machine has no Docker engine, so these tests only parse the files: they do not start anything.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
GITIGNORE = ROOT / ".gitignore"

IMAGE = "medcore-airflow:latest"
REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
LONG_RUNNING_AIRFLOW = sorted(REQUIRED_SERVICES - {"postgres", "redis", "airflow-init"})
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|JWT|_KEY$")
REQUIRED_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")  # ${VAR:?message}
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?P<password>[^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # SafeLoader resolves the anchors and `<<` merges


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def airflow_services(services: dict) -> dict:
    return {name: svc for name, svc in services.items() if name.startswith("airflow-")}


def command_text(svc: dict) -> str:
    cmd = svc.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def healthcheck_text(svc: dict) -> str:
    test = svc["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def mounts(svc: dict) -> dict[str, tuple[str, str]]:
    """Map each container path to (host source, mode) for the service's short-syntax volumes."""
    out = {}
    for spec in svc.get("volumes", []):
        parts = spec.rsplit(":", 2) if spec.endswith((":ro", ":rw")) else spec.rsplit(":", 1) + ["rw"]
        source, target, mode = parts
        out[target] = (source, mode)
    return out


def strings(node):
    """Yield every string value (and mapping key) in the parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def compose_variables(compose: dict) -> set[str]:
    """Names of the variables Compose interpolates (`$$` is an escaped literal `$`, not a variable)."""
    names = set()
    for text in strings(compose):
        text = text.replace("$$", "")
        names.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
        names.update(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    return names


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: line without '=': {line!r}"
            values[key.strip()] = value.strip()
    return values


def test_required_services_exist(services):
    """Every service of the Celery deployment is defined."""
    assert set(services) >= REQUIRED_SERVICES, f"missing: {sorted(REQUIRED_SERVICES - set(services))}"


def test_every_service_but_init_has_a_healthcheck(services):
    """Every service except the one-shot init job declares a non-empty healthcheck test."""
    for name, svc in services.items():
        if name == "airflow-init":
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("postgres", "pg_isready"),
        ("redis", "redis-cli ping"),
        ("airflow-apiserver", "/api/v2/monitor/health"),
        ("airflow-scheduler", 'airflow jobs check --job-type SchedulerJob --hostname "$${HOSTNAME}"'),
        ("airflow-dag-processor", 'airflow jobs check --job-type DagProcessorJob --hostname "$${HOSTNAME}"'),
        ("airflow-triggerer", 'airflow jobs check --job-type TriggererJob --hostname "$${HOSTNAME}"'),
        ("airflow-worker", 'inspect ping -d "celery@$${HOSTNAME}"'),
    ],
)
def test_healthcheck_probes_the_right_thing(services, service, expected):
    """Each healthcheck runs the probe that fits its service."""
    assert expected in healthcheck_text(services[service])


def test_airflow_services_use_the_image_built_from_the_dockerfile(services):
    """Every airflow-* service builds ./Dockerfile and tags the result medcore-airflow:latest."""
    assert DOCKERFILE.is_file()
    for name, svc in airflow_services(services).items():
        build = svc.get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context in (".", "./"), f"{name}: build context {build!r}"
        if isinstance(build, dict):
            assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert svc.get("image") == IMAGE, f"{name}: image {svc.get('image')!r}"


def test_apiserver_is_published_on_localhost_only(services):
    """The API server's port is bound to 127.0.0.1, and no other service publishes a port."""
    ports = [str(p) for p in services["airflow-apiserver"].get("ports", [])]
    assert ports, "airflow-apiserver publishes no port"
    for port in ports:
        assert port.startswith("127.0.0.1:") and port.endswith(":8080"), port
    for name, svc in services.items():
        if name != "airflow-apiserver":
            assert not svc.get("ports"), f"{name} publishes {svc['ports']}"


@pytest.mark.parametrize(
    ("target", "source", "mode"),
    [
        ("/opt/airflow/dags", "./dags", "rw"),
        ("/opt/airflow/plugins", "./plugins", "rw"),
        ("/opt/medcore/templates", "./templates", "rw"),
        ("/opt/medcore/conditions.yaml", "./conditions.yaml", "ro"),
        ("/opt/medcore/data", "${MEDCORE_DATA_ROOT_HOST:-./data}", "ro"),
        ("/opt/medcore/runs", "${MEDCORE_RUNS_HOST:-./runs}", "rw"),
        ("/opt/medcore/registry", "${MEDCORE_REGISTRY_HOST:-./registry}", "rw"),
    ],
)
def test_airflow_services_mount_the_project(services, target, source, mode):
    """Every airflow-* service bind-mounts the project path at its container path, with its mode."""
    for name, svc in airflow_services(services).items():
        found = mounts(svc)
        assert target in found, f"{name}: nothing mounted at {target}"
        assert found[target] == (source, mode), f"{name}: {target} <- {found[target]}"


def test_medcore_environment_points_at_the_mounts(services):
    """The MEDCORE_* and KERAS_HOME variables name the container paths the volumes provide."""
    expected = {
        "MEDCORE_CONFIG": "/opt/medcore/conditions.yaml",
        "MEDCORE_DATA_ROOT": "/opt/medcore/data",
        "MEDCORE_RUNS_ROOT": "/opt/medcore/runs",
        "MEDCORE_REGISTRY_ROOT": "/opt/medcore/registry",
        "MEDCORE_TEMPLATES": "/opt/medcore/templates",
        "KERAS_HOME": "/opt/medcore/.keras",
    }
    for name, svc in airflow_services(services).items():
        env = svc["environment"]
        for key, value in expected.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}"


def test_executor_is_celery_with_redis_and_postgres(services):
    """Every airflow-* service runs the CeleryExecutor, with Redis as broker and PostgreSQL as result backend."""
    for name, svc in airflow_services(services).items():
        env = svc["environment"]
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
        assert env.get("AIRFLOW__CELERY__BROKER_URL", "").startswith("redis://redis:6379/"), name
        assert env.get("AIRFLOW__CELERY__RESULT_BACKEND", "").startswith("db+postgresql+psycopg2://"), (
            name
        )  # SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3
        assert env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").startswith("postgresql+psycopg2://"), name
        assert env.get("AIRFLOW__CORE__LOAD_EXAMPLES") == "false", name
        assert env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL") == "http://airflow-apiserver:8080/execution/", name


def test_worker_listens_on_the_training_queue(services):
    """The Celery worker serves both the `default` and the `training` queue."""
    cmd = command_text(services["airflow-worker"]).split()
    assert cmd[:2] == ["celery", "worker"], cmd
    flag = next((i for i, arg in enumerate(cmd) if arg in ("-q", "--queues")), None)
    assert flag is not None and flag + 1 < len(cmd), f"no --queues in {cmd}"
    queues = re.fullmatch(r"\$\{MEDCORE_WORKER_QUEUES:-([a-z,]+)\}", cmd[flag + 1])
    assert queues and {"default", "training"} <= set(queues.group(1).split(",")), cmd


def test_init_migrates_and_creates_the_training_pool(services):
    """airflow-init migrates the database and creates the `training` pool with 2 slots."""
    cmd = command_text(services["airflow-init"])
    assert "airflow db migrate" in cmd
    assert re.search(r'airflow pools set training 2 "[^"]+"', cmd), cmd


def test_dependencies_wait_for_health_and_init(services):
    """Long-running Airflow services wait for healthy Postgres and Redis and a successful init job."""
    for name in LONG_RUNNING_AIRFLOW:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    init_deps = services["airflow-init"]["depends_on"]
    assert {init_deps[s]["condition"] for s in ("postgres", "redis")} == {"service_healthy"}


def test_secrets_are_required_variable_references(compose, services):
    """Passwords, keys and secrets are `${VAR:?...}` references: no literal values, no defaults."""
    checked = 0
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.match(value), f"{name}: {key}={value!r} is not a ${{VAR:?...}} reference"
                checked += 1
            for match in URL_PASSWORD.finditer(value):
                password = match.group("password")
                assert REQUIRED_REF.match(password), f"{name}: {key} embeds the literal password {password!r}"
                checked += 1
    assert checked >= 5, "found too few secrets to check: the environment layout changed"
    env = services["airflow-scheduler"]["environment"]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
        assert REQUIRED_REF.match(str(env.get(key, ""))), key


def test_env_example_defines_every_compose_variable(compose):
    """.env.example defines every variable that docker-compose.yaml interpolates."""
    used = compose_variables(compose)
    assert {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY"} <= used, used
    missing = used - set(env_example())
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_holds_only_placeholder_secrets():
    """.env.example's secret values are `change-me` placeholders, never real secrets."""
    values = env_example()
    secrets = {k: v for k, v in values.items() if SECRET_NAME.search(k)}
    assert secrets, ".env.example has no secret entries"
    for key, value in secrets.items():
        assert value == "change-me", f"{key}={value!r}"


def test_dotenv_is_git_ignored():
    """`.env` is listed in .gitignore, so the real secrets cannot be committed."""
    lines = {line.strip() for line in GITIGNORE.read_text().splitlines()}
    assert lines & {".env", "/.env"}, ".env is not in .gitignore"


def test_dockerfile_builds_on_the_pinned_airflow_image():
    """The Dockerfile starts FROM apache/airflow:3.3.2-python3.11, the release pyproject.toml pins."""
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM apache/airflow:3.3.2-python3.11", instructions[0]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "apache-airflow==3.3.2" in deps


def test_dockerfile_keeps_the_image_airflow_version():
    """The Dockerfile installs medcore with apache-airflow==${AIRFLOW_VERSION} and not from the lock file."""
    text = DOCKERFILE.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    code = code.replace("\\\n", " ")  # join continuation lines: one RUN instruction per line
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in code
    assert "apache-airflow-providers-celery" in code
    assert "/opt/medcore" in code
    assert not re.search(r"pip install[^\n]*-r\s+\S*requirements\.lock", code)
    assert re.search(r"^ENV\s+MEDCORE_TEMPLATES=/opt/medcore/templates\b", code, re.M)


WORKER = ROOT / "docker-compose.worker.yaml"
CLUSTER = ROOT / "docker-compose.cluster.yaml"


def test_runs_and_registry_are_shared_by_every_worker_not_kept_in_a_container(services):
    """Both live on host folders from .env (NFS for several machines), so every worker sees one registry and one
    lock, and recreating a container loses neither."""
    registry_root = services["airflow-worker"]["environment"]["MEDCORE_REGISTRY_ROOT"]
    for name, svc in airflow_services(services).items():
        found = mounts(svc)
        for target, variable in (("/opt/medcore/runs", "MEDCORE_RUNS_HOST"), (registry_root, "MEDCORE_REGISTRY_HOST")):
            assert variable in found[target][0] and found[target][1] == "rw", (name, target)
    assert "/opt/medcore/registry" in command_text(services["airflow-init"]), "init hands the registry to AIRFLOW_UID"


def test_a_worker_on_another_machine_joins_with_the_same_mounts_and_env(services):
    """The worker override points the main file's worker at MEDCORE_MAIN_HOST and changes nothing it mounts."""
    worker = yaml.safe_load(WORKER.read_text())["services"]
    assert set(worker) == {"airflow-worker"}
    override = worker["airflow-worker"]
    assert "volumes" not in override, "a remote worker mounts exactly what the main file mounts"
    env = override["environment"]
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ):
        assert "${MEDCORE_MAIN_HOST:?" in env[key], key
        assert key in services["airflow-worker"]["environment"], f"{key} overrides a setting of the main file"
    for key, value in env.items():
        for password in URL_PASSWORD.finditer(value):
            assert REQUIRED_REF.match(password.group("password")), f"{key}: password is not a required reference"
    assert override["hostname"].startswith("${MEDCORE_WORKER_HOSTNAME:?")


def test_the_cluster_override_publishes_only_on_the_private_address():
    """PostgreSQL, Redis and the API are published for remote workers on MEDCORE_PRIVATE_IP, never on all interfaces."""
    cluster = yaml.safe_load(CLUSTER.read_text())["services"]
    assert set(cluster) == {"postgres", "redis", "airflow-apiserver"}
    for name, svc in cluster.items():
        for port in map(str, svc["ports"]):
            assert port.startswith(("${MEDCORE_PRIVATE_IP:?", "127.0.0.1:")), (name, port)


def test_env_example_defines_the_override_files_variables():
    """.env.example names every variable the worker and cluster overrides interpolate."""
    used = set()
    for path in (WORKER, CLUSTER):
        used |= compose_variables(yaml.safe_load(path.read_text()))
    missing = used - set(env_example())
    assert not missing, f".env.example lacks {sorted(missing)}"
