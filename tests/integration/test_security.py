"""Security of the Airflow installation: authentication stays on, secrets are per installation and not in git."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

from tests.integration.cluster import AIRFLOW_LOCAL, DAG_ID, ROOT

PROTECTED = [
    ("GET", f"/api/v2/dags/{DAG_ID}"),
    ("GET", f"/api/v2/dags/{DAG_ID}/dagRuns"),
    ("POST", f"/api/v2/dags/{DAG_ID}/dagRuns"),
    ("PATCH", f"/api/v2/dags/{DAG_ID}"),
    ("GET", "/api/v2/pools"),
    ("GET", "/api/v2/connections"),
    ("GET", "/api/v2/variables"),
]


def _plugin_prefix() -> str | None:
    """The URL prefix of the report pages plugin, if the project has it."""
    plugin = ROOT / "plugins" / "medcore_reports.py"
    found = re.search(r'^URL_PREFIX = "([^"]+)"', plugin.read_text(), re.M) if plugin.is_file() else None
    return found.group(1) if found else None


def _secrets_of(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(home)}
    done = subprocess.run(
        [
            str(AIRFLOW_LOCAL),
            "bash",
            "-c",
            'printf "%s\\n%s" "$AIRFLOW__API_AUTH__JWT_SECRET" "$AIRFLOW__API__SECRET_KEY"',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    jwt, api = done.stdout.split("\n")
    return {"jwt": jwt, "api": api}


def test_secrets_are_generated_per_installation(tmp_path):
    """bin/airflow-local makes a 64-byte JWT secret and API key once per AIRFLOW_HOME, private and git-ignored."""
    first, again, other = _secrets_of(tmp_path / "a"), _secrets_of(tmp_path / "a"), _secrets_of(tmp_path / "b")
    assert first == again, "the same installation keeps its secrets"
    assert first["jwt"] != other["jwt"] and first["api"] != other["api"], "each installation has its own"
    assert first["jwt"] != first["api"]
    for value in first.values():
        assert len(value) >= 86, "64 random bytes, URL-safe base64"
    for name in ("jwt_secret", "api_secret_key"):
        mode = stat.S_IMODE((tmp_path / "a" / name).stat().st_mode)
        assert mode == 0o600, f"{name} is readable by others: {oct(mode)}"

    # The embedded installation lives in airflow_home/, which git ignores; no secret is in the repo.
    ignored = subprocess.run(["git", "check-ignore", "-q", "airflow_home/jwt_secret"], cwd=ROOT)
    assert ignored.returncode == 0, "airflow_home/ must be git-ignored"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not [
        f
        for f in tracked.splitlines()
        if Path(f).name in ("jwt_secret", "api_secret_key")
        or f.endswith("simple_auth_manager_passwords.json.generated")
    ]


def test_rest_api_refuses_unauthenticated_calls(cluster):
    """No token, a forged token or a wrong password: 401; no all-admin token; a viewer cannot trigger runs."""
    for method, path in PROTECTED:
        response = cluster.http(method, path, json={} if method != "GET" else None)
        assert response.status_code == 401, f"{method} {path} without a token: {response.status_code}"
        forged = cluster.http(
            method, path, token="eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.forged", json={} if method != "GET" else None
        )
        assert forged.status_code in (401, 403), f"{method} {path} with a forged token: {forged.status_code}"

    bad_login = cluster.http("POST", "/auth/token", json={"username": "admin", "password": "admin"})
    assert bad_login.status_code == 401, "the password is generated, never the user name"
    assert cluster.http("GET", "/auth/token").status_code == 403, "all-admin mode is off"

    # The tokens are signed with this installation's generated secret (not a default or a shared one).
    import jwt

    secret = (cluster.home / "jwt_secret").read_text()
    claims = jwt.decode(cluster.token(), secret, algorithms=["HS512"], options={"verify_aud": False})
    assert claims["sub"], claims

    viewer = cluster.token("viewer")
    assert cluster.http("GET", f"/api/v2/dags/{DAG_ID}", token=viewer).status_code == 200
    denied = cluster.http(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        token=viewer,
        json={"logical_date": None, "conf": {"conditions": ["pneumonia"]}},
    )
    assert denied.status_code == 403, f"a viewer triggered a run: {denied.status_code} {denied.text}"
    assert cluster.api("GET", "/api/v2/pools").status_code == 200, "the admin token works"

    prefix = _plugin_prefix()  # Airflow does not protect plugin apps by itself: the plugin must
    if prefix is not None:
        assert cluster.http("GET", f"{prefix}/").status_code == 401, "the report pages need a token too"


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def test_models_are_loaded_in_keras_safe_mode():
    """Every Keras model load in the project's code asks for safe mode (no arbitrary code from a .keras file)."""
    calls = 0
    for path in _tracked("*.py"):
        if path.is_relative_to(ROOT / "tests"):
            continue
        text = path.read_text(errors="replace")
        assert "safe_mode=False" not in text, f"{path.relative_to(ROOT)} turns Keras safe mode off"
        for match in re.finditer(r"keras\.(?:models|saving)\.load_model\(", text):
            depth, end = 1, match.end()
            while depth and end < len(text):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[match.start() : end]
            assert "safe_mode=True" in call, f"{path.relative_to(ROOT)}: {call}"
            calls += 1
    assert calls, "found no Keras model load to check: the loading code moved"


def test_no_credentials_in_the_repository():
    """SMTP and database credentials live in Airflow connections or the environment, never in tracked config."""
    secret_key = re.compile(
        r"^[ \t\"']*[\w-]*(password|passwd|secret|secret_key|token|api_key)[\"']?[ \t]*[:=][ \t]*\S.*$", re.I | re.M
    )
    for path in _tracked("*.yaml", "*.yml", "*.cfg", "*.ini", "*.toml", "*.json", ".env*"):
        if path.name == ".env.example" or path.is_relative_to(ROOT / "tests"):
            continue  # placeholders only (tests/test_docker_compose.py checks it)
        for match in secret_key.finditer(path.read_text(errors="replace")):
            line = match.group(0).strip()
            assert "${" in line or line.endswith(("''", '""', "null", "~")), f"{path.relative_to(ROOT)}: {line}"
    assert not _tracked(".env", "airflow_home/*", "*.generated")
