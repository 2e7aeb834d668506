"""E-mail the status report: report.md converted to HTML with its key Grad-CAM images inline, report.md attached.

The message is built here as multipart/related (HTML plus image/png parts named by Content-ID), so
the images show in a mail client that cannot reach the server; Airflow's SMTP hook supplies the
connection (host, TLS, login) and would attach every file as an opaque download instead.

The report is written before this runs, and sending only reads it. Whatever happens (sent, skipped
because nobody is configured, or failed) is recorded in `notify.json` in the run folder, and a
failed send returns instead of raising, so nothing here can cost the report. The DAG's notify task
turns a failed record into a failed task (red in the grid, error in its log), the run's verdict
names it, and the Airflow UI's report page shows it as a banner.

Airflow is imported only inside `deliver`, so this module loads without it (tests, `medcore run`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage, MIMEPart
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

from medcore.config import NotifySettings
from medcore.errors import one_line
from medcore.jsonio import read_json, write_json
from medcore.layout import RunLayout

__all__ = ["Email", "build_email", "key_images", "send_report", "report_page_url", "UI_PREFIX"]

# (email, SMTP connection id, recipients, sender or None): sends, or raises with the reason.
Deliver = Callable[["Email", str, tuple[str, ...], "str | None"], None]

log = logging.getLogger(__name__)
UI_PREFIX = "/medcore-reports"  # where plugins/medcore_reports.py mounts the report pages in the API server
DEFAULT_SENDER = "medcore@localhost"


@dataclass(frozen=True)
class Email:
    """One message, ready to send: the HTML shows each `inline` image by its Content-ID (cid:<name>); `files`
    are attachments. Names are unique within the message."""

    subject: str
    html: str
    files: tuple[Path, ...]
    inline: tuple[tuple[str, Path], ...] = ()
    text: str = ""

    def mime(self, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
        """mixed[ related[ alternative[text, html], image/png inline parts ], attachments ]: what mail clients
        show as one page with its pictures, and the files below it."""
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = self.subject, sender, ", ".join(recipients)
        message["Date"] = formatdate(localtime=True)
        message.set_content(self.text or "This report is HTML; open it in a mail client that shows HTML.")
        message.add_alternative(self.html, subtype="html")
        parts = message.get_payload()
        # Cannot fire: after set_content and add_alternative the payload is [text part, html part], both of the
        # message's own class (typeshed types get_payload() as str | Message | list, so narrow it here).
        assert isinstance(parts, list) and isinstance(parts[1], MIMEPart)
        html_part = parts[1]
        for name, path in self.inline:
            kind = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
            html_part.add_related(
                path.read_bytes(), "image", kind, cid=f"<{name}>", filename=name, disposition="inline"
            )
        for path in self.files:  # as bytes (base64): the reader gets the file exactly, line endings included
            message.add_attachment(
                path.read_bytes(),
                maintype="text",
                subtype="markdown" if path.suffix == ".md" else "plain",
                filename=path.name,
            )
        return message


def report_page_url(base_url: str, run_id: str, path: str = "") -> str:
    """The Airflow UI address of a run's report page, or of a file inside the run folder."""
    from medcore.layout import safe_run_id

    page = f"{base_url.rstrip('/')}{UI_PREFIX}/runs/{quote(safe_run_id(run_id))}/"
    if path.endswith("/model_card.md") and path.count("/") == 2:  # a model card opens as a page, not raw Markdown
        return page + "cards/" + quote(path.rsplit("/", 1)[0])
    return page + (f"files/{quote(path)}" if path else "")


def key_images(run: RunLayout, limit: int) -> list[tuple[str, Path, str]]:
    """Up to `limit` (attachment name, file, model) triples: per successful model, best test ROC AUC first, its
    contact sheet (or else its first overlay). Names are `<condition>-<profile>-<file>`, unique across models."""
    from medcore.nights.registry import figure, succeeded

    info = read_json(run.run_json)
    found = []
    for job in info["jobs"]:
        paths = run.model(job["condition"], job["profile"])
        if not succeeded(paths):
            continue
        gradcam = read_json(paths.gradcam_json)
        chosen = gradcam.get("contact_sheet") or next((o["file"] for o in gradcam.get("overlays", [])), None)
        if chosen and Path(chosen).is_file():
            auc = figure(read_json(paths.metrics_json), "roc_auc")
            found.append(
                (
                    -(auc if auc is not None else -1.0),
                    f"{paths.condition}-{paths.profile}-{Path(chosen).name}",
                    Path(chosen),
                    f"{paths.condition}/{paths.profile}",
                )
            )
    found.sort(key=lambda item: item[0])  # stable: plan order among equal AUCs
    return [(name, path, model) for _, name, path, model in found[:limit]]


def _subject(run: RunLayout) -> str:
    """The run's verdict as the report wrote it (summary.json), the conditions that need a person, the run id:
    "[medcore] look: pneumonia, cardiomegaly · 1/1 models succeeded · run <id>"."""
    summary = read_json(run.summary_json) if run.summary_json.exists() else {}
    promotion = read_json(run.promotion_json) if run.promotion_json.exists() else {}
    planned, succeeded = summary.get("planned", 0), summary.get("succeeded", 0)
    state, needs = summary.get("verdict") or "failed", summary.get("needs") or []
    if summary.get("plan_error"):
        head = f"[medcore] {state}: the run did not start"
    else:
        head = f"[medcore] {state}" + (f": {', '.join(needs)}" if needs else "")
    parts = [head]
    if not summary.get("plan_error"):
        parts.append(f"{succeeded}/{planned} models succeeded")
    promoted = [c for c, d in (promotion.get("conditions") or {}).items() if d.get("decision") == "promoted"]
    if promoted:
        parts.append(f"new champion: {', '.join(promoted)}")
    parts.append(f"run {run.run_id}")
    return " · ".join(parts)


def build_email(run: RunLayout, settings: NotifySettings) -> Email:
    """The subject, the HTML body with the key Grad-CAM images inline, the plain-text report, report.md attached."""
    from medcore.errors import StageError
    from medcore.report.render import render_html

    if not run.report_md.is_file():
        raise StageError(f"{run.report_md}: no report to send; the report stage has not succeeded")
    markdown = run.report_md.read_text(encoding="utf-8")
    inline, shown = {}, []
    for name, source, model in key_images(run, settings.max_images):
        inline[source.resolve()] = name
        if source.resolve().is_relative_to(run.root.resolve()):
            relative = source.resolve().relative_to(run.root.resolve()).as_posix()
            shown.append(f"**{model}**\n\n![{model} Grad-CAM {Path(name).stem.rsplit('-', 1)[-1]}]({relative})")

    def link(relative: str) -> str | None:
        # Inline images show by Content-ID; anything else links to the UI page when its address is configured,
        # and otherwise shows as text: a relative link in an e-mail would point nowhere.
        source = (run.root / relative).resolve()
        if source in inline:
            return f"cid:{inline[source]}"
        return report_page_url(settings.report_url, run.run_id, relative) if settings.report_url else None

    def offline(match: re.Match) -> str:
        # An image that is not inline would be fetched from the server when the mail is opened: link it instead.
        alt, target = match.group(1), match.group(2)
        return match.group(0) if (run.root / target).resolve() in inline else f"[{alt} (image)]({target})"

    markdown = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", offline, markdown)
    if not settings.report_url:
        # Without the UI's address a relative link leads nowhere from a mail client: name the file instead.
        markdown = re.sub(
            r"(?<!!)\[([^\]]+)\]\(([^)\s#][^)\s]*)\)",
            lambda m: (
                m.group(0)
                if "://" in m.group(2) or m.group(2).startswith(("/", "mailto:", "#"))
                else f"{m.group(1)} (`{run.root.name}/{m.group(2)}`)"
            ),
            markdown,
        )
    if settings.report_url:
        markdown = f"[Open this report in Airflow]({report_page_url(settings.report_url, run.run_id)})\n\n{markdown}"
    if shown:
        # The report links each contact sheet; the e-mail shows them, since it cannot reach the run folder.
        markdown += "\n\n## Grad-CAM images\n\n" + "\n\n".join(shown) + "\n"
    subject = _subject(run)
    return Email(
        subject=subject,
        html=render_html(markdown, title=subject, link=link, script=False),
        files=(run.report_md,),
        inline=tuple((name, path) for path, name in inline.items()),
        text=markdown,
    )


def send_report(run: RunLayout, settings: NotifySettings, deliver: Deliver) -> dict[str, Any]:
    """E-mail the run's report to `settings.recipients` by `deliver` (the Airflow adapter's SMTP hook, in the DAG
    and in `medcore resend`); record and return what happened. Never raises for a failed send: the record says
    `failed` with the error instead."""
    record: dict[str, Any] = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "conn_id": settings.conn_id,
        "recipients": list(settings.recipients),
        "report": run.report_md,
    }
    if not settings.recipients:
        record.update(
            status="skipped",
            reason="no recipients: set notify.recipients in the config, or the recipients parameter when triggering",
        )
        log.info("report e-mail skipped: no recipients configured")
    else:
        try:
            email = build_email(run, settings)
            record.update(
                subject=email.subject,
                attachments=[f.name for f in email.files],
                inline_images=[name for name, _ in email.inline],
            )
            deliver(email, settings.conn_id, settings.recipients, settings.from_email)
            record["status"] = "sent"
            log.info(
                "report e-mailed to %s via %s: %s", ", ".join(settings.recipients), settings.conn_id, email.subject
            )
        except Exception as exc:  # an SMTP, connection or rendering error must never cost the report
            record.update(status="failed", error=one_line(exc))
            log.error(
                "report e-mail NOT sent via connection %r: %s (the report is safe at %s)",
                settings.conn_id,
                record["error"],
                run.report_md,
                exc_info=True,
            )
    earlier = read_json(run.notify_json) if run.notify_json.exists() else {}
    if record["status"] != "sent" and earlier.get("status") == "sent":
        # A failed (or skipped) resend must not make a delivered report look undelivered: keep the success,
        # note the attempt beside it.
        write_json(run.notify_json, {**earlier, "later_attempts": [*earlier.get("later_attempts", []), record]})
        return {**record, "kept": "sent"}
    write_json(run.notify_json, record)
    return record
