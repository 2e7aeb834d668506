"""The "Training reports" page, served by the real Airflow API server on 127.0.0.1 behind Airflow's own login."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from urllib.parse import urlencode

import httpx
import pytest

from medcore import pipeline
from medcore.jsonio import read_json, write_json
from medcore.report.render import write_report
from tests.conftest import ROOT, airflow_home_from
from tests.fakes import metrics_with, write_config, write_run

RUN_ID = "manual__2026-11-27T01:00:00+00:00"
pytestmark = pytest.mark.slow  # the API server's start-up takes ~20 s on two cores


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(server: subprocess.Popen) -> None:
    """Stop the server we started by its PID: SIGTERM to its own process group (start_new_session), then
    SIGKILL to whatever of that group is left."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)  # uvicorn takes a few seconds to shut down cleanly
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=10)


@pytest.fixture()
def api_server(tmp_path, monkeypatch, migrated_airflow_db):
    """`airflow api-server` on a free 127.0.0.1 port with a fresh AIRFLOW_HOME and this project's plugins folder."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home_from(migrated_airflow_db, tmp_path / "airflow")),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "MEDCORE_RUNS_ROOT": str(tmp_path / "runs"),
    }
    airflow = str(ROOT / "bin" / "airflow-local")
    log = (tmp_path / "api-server.log").open("w")
    server = subprocess.Popen(
        [airflow, "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "api-server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API server did not come up in 180 s"
            time.sleep(0.5)
        passwords = json.loads((tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        login = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": passwords["admin"]}, timeout=30)
        assert login.status_code == 201, login.text
        yield base, login.json()["access_token"]
    finally:
        _stop(server)
        log.close()


def _runs(tmp_path):
    config = write_config(tmp_path)
    run = write_run(
        tmp_path / "runs",
        RUN_ID,
        {("pneumonia", "standard"): {"metrics": metrics_with(0.91), "seed": 1}, ("limb", "standard"): "validate"},
        config,
    )
    pipeline.promote(run.run_id, run.runs_root)
    run.model("pneumonia", "standard").model_card.write_text("# Model card: pneumonia / standard\n\nResearch only.\n")
    write_report(run)
    write_json(
        run.notify_json,
        {
            "status": "failed",
            "error": "ConnectionRefusedError: [Errno 111] Connection refused",
            "conn_id": "smtp_default",
            "time": "2026-11-27T02:00:00+00:00",
        },
    )
    (tmp_path / "runs" / "secret.txt").write_text("not for the page")
    (tmp_path / "secret.txt").write_text("not for the page either")
    return run


def test_reports_page_behind_airflow_login(tmp_path, api_server):
    """Anonymous and forged callers are refused; a logged-in user lists runs, reads a report and fetches its image."""
    run = _runs(tmp_path)
    base, token = api_server
    auth = {"Authorization": f"Bearer {token}"}
    pages = f"{base}/medcore-reports"
    folder = run.root.name

    assert httpx.get(f"{pages}/", timeout=30).status_code == 401
    assert httpx.get(f"{pages}/runs/{folder}/files/pneumonia/standard/gradcam/tp_01.png", timeout=30).status_code == 401
    assert httpx.get(f"{pages}/", headers={"Authorization": "Bearer forged.token.value"}, timeout=30).status_code == 403
    # A browser following the e-mail's link goes to Airflow's login, which sends it back to the page afterwards.
    for cookies in ({}, {"_token": "expired.or.forged"}):
        sent = httpx.get(f"{pages}/runs/{folder}/", headers={"Accept": "text/html"}, cookies=cookies, timeout=30)
        assert sent.status_code == 303
        assert sent.headers["location"] == "/api/v2/auth/login?" + urlencode({"next": f"{pages}/runs/{folder}/"})
        login = httpx.get(base + sent.headers["location"], timeout=30)
        assert login.status_code == 307 and login.headers["location"].startswith("/auth/login?next=http")

    listing = httpx.get(f"{pages}/", headers=auth, timeout=30)
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
    assert f'href="runs/{folder}/"' in listing.text and RUN_ID in listing.text
    assert "1/2" in listing.text and "pneumonia: promoted" in listing.text and "⚠️ failed" in listing.text
    verdict = read_json(run.summary_json)["verdict_words"]
    assert f"❌ {verdict}" in listing.text and verdict.startswith("failed: "), "the report's verdict, word for word"
    assert f'href="runs/{folder}/cards/"' in listing.text, "the run's model cards are one click away"
    assert f'<img src="runs/{folder}/files/trend/pneumonia.png"' in listing.text, "the trend per condition"

    page = httpx.get(f"{pages}/runs/{folder}/", headers=auth, timeout=30)
    assert page.status_code == 200
    metrics = read_json(run.model("pneumonia", "standard").metrics_json)
    low, high = metrics["intervals"]["roc_auc"]["low"], metrics["intervals"]["roc_auc"]["high"]
    assert f"{metrics['roc_auc']:.2f} ({low:.2f}–{high:.2f})" in page.text, "the report's own figures"
    assert '<img src="files/pneumonia/standard/gradcam/tp_01.png"' in page.text
    assert '<img src="files/trend/pneumonia.png"' in page.text
    trend = httpx.get(f"{pages}/runs/{folder}/files/trend/pneumonia.png", headers=auth, timeout=30)
    assert trend.status_code == 200 and trend.content == run.trend_png("pneumonia").read_bytes()
    assert "The report e-mail was not sent (ConnectionRefusedError" in page.text, "a failed send shows as a banner"
    assert 'href="cards/pneumonia/standard"' in page.text, "the report links each model's card, shown as a page"
    cards = httpx.get(f"{pages}/runs/{folder}/cards/", headers=auth, timeout=30)
    assert cards.status_code == 200 and 'href="pneumonia/standard"' in cards.text
    card = httpx.get(f"{pages}/runs/{folder}/cards/pneumonia/standard", headers=auth, timeout=30)
    assert card.status_code == 200 and "<h1>Model card: pneumonia / standard</h1>" in card.text
    assert httpx.get(f"{pages}/runs/{folder}/cards/limb/standard", headers=auth, timeout=30).status_code == 404

    image = httpx.get(f"{pages}/runs/{folder}/files/pneumonia/standard/gradcam/tp_01.png", headers=auth, timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == run.model("pneumonia", "standard").gradcam_overlay("tp", 1).read_bytes()
    cookie = httpx.get(f"{pages}/runs/{folder}/", cookies={"_token": token}, timeout=30)
    assert cookie.status_code == 200, "the UI's session cookie works too (the page is shown in an iframe)"

    for path in (
        f"runs/{folder}/files/..%2Fsecret.txt",
        f"runs/{folder}/files/..%2F..%2Fsecret.txt",
        f"runs/{folder}/files/%2Fetc%2Fpasswd",
        f"runs/{folder}/files/pneumonia/standard/model.keras",
        "runs/..%2Fsecret.txt/",
        "runs/no-such-run/",
    ):
        refused = httpx.get(f"{pages}/{path}", headers=auth, timeout=30)
        assert refused.status_code == 404, (path, refused.status_code, refused.text[:200])

    plugins = httpx.get(f"{base}/api/v2/plugins", headers=auth, timeout=30).json()["plugins"]
    [plugin] = [p for p in plugins if p["name"] == "medcore_reports"]
    assert plugin["external_views"][0]["name"] == "Reports"
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/medcore-reports"


def test_run_folders_that_link_out_of_the_runs_root_are_not_runs(tmp_path, monkeypatch):
    """A run folder that is a symlink to a folder outside the runs root is neither listed nor served (404)."""
    import importlib.util

    from fastapi import HTTPException

    spec = importlib.util.spec_from_file_location("medcore_reports_under_test", ROOT / "plugins" / "medcore_reports.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    run = _runs(tmp_path)
    outside = tmp_path / "elsewhere" / "forged"
    outside.mkdir(parents=True)
    write_json(outside / "run.json", {"run_id": "forged", "started": "2099-01-01T00:00:00+00:00"})
    (outside / "report.md").write_text("# not a run of this root\n")
    (tmp_path / "runs" / "forged").symlink_to(outside)
    (tmp_path / "runs" / "latest").symlink_to(run.root)  # a link that stays inside the root is still a run
    monkeypatch.setenv("MEDCORE_RUNS_ROOT", str(tmp_path / "runs"))
    assert sorted(r["folder"] for r in plugin._run_rows()) == sorted([run.root.name, "latest"])
    assert plugin._run_folder(run.root.name) == tmp_path / "runs" / run.root.name
    with pytest.raises(HTTPException) as caught:
        plugin._run_folder("forged")
    assert caught.value.status_code == 404
