"""The report e-mail goes through Airflow's SMTP provider to a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import email
import hashlib
import logging
import re
import socket
from email import policy

import pytest

from medcore import pipeline
from medcore.errors import StageError
from medcore.jsonio import read_json
from medcore.report.render import write_report
from tests.fakes import metrics_with, write_config, write_run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Inbox:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture()
def smtp_server():
    """A real SMTP server on 127.0.0.1 and a free port, stopped after the test."""
    from aiosmtpd.controller import Controller

    # aiosmtpd logs each dropped connection at INFO from its own thread, after pytest has closed the captured
    # stream: "--- Logging error ---" tracebacks in the test output. Its warnings still show.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


@pytest.fixture()
def airflow_env(tmp_path, monkeypatch):
    """Airflow state in a temporary folder; connections come from AIRFLOW_CONN_* variables."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)


def _connection(monkeypatch, name: str, port: int) -> None:
    # Extras as the provider's SmtpHook reads them: plain SMTP (no SSL, no STARTTLS), one attempt, short timeout.
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{name.upper()}",
        f"smtp://127.0.0.1:{port}?disable_ssl=true&disable_tls=true&retry_limit=0&timeout=10"
        "&from_email=medcore%40lab.example",
    )


def _run(tmp_path, params=None, notify=""):
    config = write_config(tmp_path, extra=notify)
    run = write_run(
        tmp_path / "runs",
        "manual__2026-11-27T01:00:00+00:00",
        {
            ("pneumonia", "standard"): {"metrics": metrics_with(0.91), "seed": 1},
            ("limb", "standard"): {"metrics": metrics_with(0.78), "seed": 2},
            ("knee", "standard"): "train",
        },
        config,
        params=params,
    )
    pipeline.promote(run.run_id, run.runs_root)
    write_report(run)
    return run


def test_report_arrives_with_html_and_attachments(tmp_path, monkeypatch, airflow_env, smtp_server):
    """Subject, HTML body (with inline Grad-CAM images) and attachments arrive as sent, through a real SMTP exchange."""
    port, inbox = smtp_server
    _connection(monkeypatch, "smtp_test", port)
    run = _run(
        tmp_path,
        params={"recipients": ["ward@hospital.example", "lab@hospital.example"], "smtp_conn_id": "smtp_test"},
        notify="notify: {recipients: [config@example.org], conn_id: smtp_default, max_images: 8}\n",
    )
    report_before = run.report_md.read_bytes()

    record = pipeline.notify(run.run_id, run.runs_root)
    assert record["status"] == "sent", record
    assert read_json(run.notify_json)["status"] == "sent"
    [envelope] = inbox.envelopes
    assert sorted(envelope.rcpt_tos) == ["lab@hospital.example", "ward@hospital.example"], "run params beat the config"
    assert envelope.mail_from == "medcore@lab.example"

    message = email.message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == record["subject"]
    # The report's one verdict, word for word, then the conditions that need a person.
    summary = read_json(run.summary_json)
    assert message["Subject"].startswith(f"[medcore] {summary['verdict']}: {', '.join(summary['needs'])} · ")
    assert summary["verdict"] == "failed" and "2/3 models succeeded" in message["Subject"]
    assert "new champion: pneumonia, limb" in message["Subject"]
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "<table>" in html and "0.91 (0.72–1.00)" in html, "the body is the report, metrics with intervals"
    assert "failed at <code>train</code>" in html
    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert list(attachments) == ["report.md"] and attachments["report.md"].get_payload(decode=True) == report_before
    assert message.get_body(preferencelist=("plain",)).get_content().startswith("# medcore training status report")
    # Key images: each successful model's contact sheet, best ROC AUC first, inline beside the HTML (one
    # multipart/related), each named by the Content-ID the HTML shows it by: readable without the server.
    related = next(part for part in message.walk() if part.get_content_type() == "multipart/related")
    images = [part for part in related.iter_parts() if part.get_content_maintype() == "image"]
    assert [part.get_filename() for part in images] == [
        "pneumonia-standard-contact_sheet.png",
        "limb-standard-contact_sheet.png",
    ]
    for part in images:
        name = part.get_filename()
        source = run.model(name.split("-")[0], "standard").gradcam_contact_sheet
        assert part.get_content() == source.read_bytes() and part.get_content_type() == "image/png"
        assert part["Content-ID"] == f"<{name}>" and part.get_content_disposition() == "inline"
        assert f'src="cid:{name}"' in html
    # Overlays that are not inline would need the server: their alt text stands in, and every <img> is inline.
    # Without notify.report_url no link could lead anywhere: each names its file in the run folder instead.
    assert 'href="pneumonia/' not in html and "tp p=0.90 (image)" in html
    assert f"<code>{run.root.name}/pneumonia/standard/gradcam/tp_01.png</code>" in html
    assert re.findall(r'<img src="([^":]+):', html) == ["cid"] * len(images)
    assert run.report_md.read_bytes() == report_before, "sending never rewrites the report"


def test_failed_send_is_recorded_and_keeps_the_report(tmp_path, monkeypatch, airflow_env):
    """A server that is not there: the stage returns `failed` with the error, notify.json says so, the report
    is untouched, and the verdict then fails the run naming the e-mail."""
    _connection(monkeypatch, "smtp_down", _free_port())  # nothing listens there
    run = _run(tmp_path, notify="notify: {recipients: [ward@hospital.example], conn_id: smtp_down}\n")
    digest = hashlib.sha256(run.report_md.read_bytes()).hexdigest()

    record = pipeline.notify(run.run_id, run.runs_root)
    assert record["status"] == "failed" and "Connection refused" in record["error"]
    saved = read_json(run.notify_json)
    assert saved["status"] == "failed" and saved["error"] == record["error"] and saved["conn_id"] == "smtp_down"
    assert hashlib.sha256(run.report_md.read_bytes()).hexdigest() == digest
    with pytest.raises(
        StageError, match=r"1 of 3 models failed: knee/standard \(train\); the report e-mail was not sent"
    ):
        pipeline.verdict(read_json(run.summary_json))


def test_unknown_connection_is_a_recorded_failure(tmp_path, monkeypatch, airflow_env):
    """A connection id that does not exist is a failed send with the provider's message, not a crash."""
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_SMTP", raising=False)
    run = _run(tmp_path, params={"recipients": ["a@b.example"], "smtp_conn_id": "no_such_smtp"})
    record = pipeline.notify(run.run_id, run.runs_root)
    assert record["status"] == "failed" and "not" in record["error"].lower() and "found" in record["error"].lower()


def test_no_recipients_skips_without_failing(tmp_path, airflow_env):
    """Without recipients nothing is sent, notify.json says why, and the verdict only judges the models."""
    run = _run(tmp_path)
    record = pipeline.notify(run.run_id, run.runs_root)
    assert record["status"] == "skipped" and "no recipients" in record["reason"]
    with pytest.raises(StageError) as failed:
        pipeline.verdict(read_json(run.summary_json))
    assert "e-mail" not in str(failed.value)


def test_failed_resend_keeps_the_recorded_success(tmp_path, monkeypatch, airflow_env, smtp_server):
    """Sent once; a resend through a server that is gone fails, and notify.json still says sent (the attempt noted)."""
    port, _inbox = smtp_server
    _connection(monkeypatch, "smtp_test", port)
    run = _run(tmp_path, notify="notify: {recipients: [ward@hospital.example], conn_id: smtp_test}\n")
    assert pipeline.notify(run.run_id, run.runs_root)["status"] == "sent"
    _connection(monkeypatch, "smtp_test", _free_port())  # nothing listens there now
    again = pipeline.notify(run.run_id, run.runs_root)
    assert again["status"] == "failed" and again["kept"] == "sent"
    saved = read_json(run.notify_json)
    assert saved["status"] == "sent" and saved["later_attempts"][0]["status"] == "failed"
    pipeline.verdict({**read_json(run.summary_json), "failed": 0, "failures": []})  # the e-mail counts as sent


def test_resend_by_folder_name_to_given_recipients(tmp_path, monkeypatch, airflow_env, smtp_server, capsys):
    """`medcore resend <folder name> --to ...`: the run found by its folder, the report sent to those addresses."""
    from medcore.cli import main

    port, inbox = smtp_server
    _connection(monkeypatch, "smtp_test", port)
    run = _run(tmp_path, notify="notify: {recipients: [config@example.org], conn_id: smtp_test}\n")
    config = str(tmp_path / "medcore.yaml")
    assert run.root.name != run.run_id, "the folder name differs from the run id (':' and '+' are cleaned)"
    assert main(["resend", run.root.name, "--to", "a@x.example, b@y.example", "--config", config]) == 0
    [envelope] = inbox.envelopes
    assert sorted(envelope.rcpt_tos) == ["a@x.example", "b@y.example"]
    assert capsys.readouterr().out.startswith("sent: [medcore] failed: ")
    assert main(["resend", "no-such-run", "--config", config]) == 2
    assert "no run with id or folder name 'no-such-run'" in capsys.readouterr().err
