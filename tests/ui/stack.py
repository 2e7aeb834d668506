"""A real embedded Airflow (api-server, scheduler, dag-processor on free 127.0.0.1 ports), a real SMTP server and
headless Chromium, as a new user meets them; every process started here is stopped by its PID."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, TINY_PROFILES
from tests.servers import airflow, free_port, start, stop, wait_for

ARTIFACTS = ROOT / "artifacts" / "ui"  # screenshots of each step (git-ignored); CI keeps them as test artefacts
SMTP_CONN = "smtp_ui"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)


class Inbox:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@dataclass
class Stack:
    """What the tests need to reach the running Airflow: its address, the admin login, the runs, the inbox."""

    base: str
    password: str
    runs_root: Path
    inbox: Inbox
    env: dict[str, str]
    processes: list = field(default_factory=list)

    def token(self) -> str:
        login = httpx.post(f"{self.base}/auth/token", json={"username": "admin", "password": self.password}, timeout=30)
        assert login.status_code == 201, login.text
        return login.json()["access_token"]


def tiny_config(folder: Path, data: Path, base: str) -> Path:
    """conditions.yaml with 32 px one-epoch profiles over the synthetic sets, runs in `folder`, e-mail links to
    the report pages at `base`."""
    config = folder / "tiny.yaml"
    config.write_text(
        f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {data}\nruns_root: {folder / 'runs'}\n"
        f"notify: {{conn_id: {SMTP_CONN}, report_url: '{base}'}}\n" + textwrap.dedent(TINY_PROFILES)
    )
    return config


def start_stack(folder: Path, smtp_port: int, inbox: Inbox) -> Stack:
    """Migrate a fresh AIRFLOW_HOME, create the training pool, start the three components, wait for health."""
    from medcore.data.synthetic import write_demo_data

    data = folder / "data"
    write_demo_data(data, per_class=24, size=32, seed=3)
    port = free_port()
    config = tiny_config(folder, data, f"http://127.0.0.1:{port}")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MEDCORE_"))}
    env = {
        **keep,
        "AIRFLOW_HOME": str(folder / "airflow"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "MEDCORE_CONFIG": str(config),
        "MEDCORE_REGISTRY_ROOT": str(folder / "registry"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "MEDCORE_RETRY_DELAY_SECONDS": "1",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # nothing but what the test triggers
        f"AIRFLOW_CONN_{SMTP_CONN.upper()}": f"smtp://127.0.0.1:{smtp_port}?disable_ssl=true&disable_tls=true"
        "&retry_limit=0&timeout=10&from_email=medcore%40lab.example",
    }
    airflow(["airflow", "db", "migrate"], env)
    airflow(["airflow", "pools", "set", "training", "1", "DenseNet training"], env)
    stack = Stack(base=f"http://127.0.0.1:{port}", password="", runs_root=folder / "runs", inbox=inbox, env=env)
    for name, args in (
        ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]),
        ("scheduler", ["scheduler"]),
        ("dag-processor", ["dag-processor"]),
    ):
        stack.processes.append(start(["airflow", *args], env, folder / f"{name}.log"))

    def healthy() -> bool:
        try:
            return httpx.get(f"{stack.base}/api/v2/monitor/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 180, "the API server's health", alive=tuple(stack.processes))
        passwords = folder / "airflow" / "simple_auth_manager_passwords.json.generated"
        stack.password = json.loads(passwords.read_text())["admin"]
        headers = {"Authorization": f"Bearer {stack.token()}"}
        wait_for(
            lambda: (
                httpx.get(f"{stack.base}/api/v2/dags/medical_training_manual", headers=headers, timeout=10).status_code
                == 200
            ),
            180,
            "the DAG processor to store the DAGs",
            alive=tuple(stack.processes),
        )
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    for process in reversed(stack.processes):
        stop(process)


def chromium(profile: Path):
    """Debian's headless Chromium through Debian's chromedriver (no driver download), a fresh profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))
