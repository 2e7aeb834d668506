"""The run's closing stages, after every chain: promote, report, notify and the verdict."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcore.config import load_config
from medcore.errors import StageError, one_line
from medcore.jsonio import read_json, write_json
from medcore.layout import RunLayout
from medcore.pipeline.jobs import recipients
from medcore.pipeline.stage import now

if TYPE_CHECKING:
    from medcore.report.notify import Deliver, Email

__all__ = ["promote", "report", "notify", "verdict", "through_airflow"]

log = logging.getLogger("medcore.pipeline")


def promote(run_id: str, runs_root: str | os.PathLike[str]) -> dict[str, Any]:
    """Decide, once per condition of the run, whether its best model becomes the champion; write promotion.json.

    Runs after every chain, whatever they did: a condition whose models all failed gets a decision
    too ("kept champion" or "no champion"). One condition's registry error never stops the others;
    the stage still fails afterwards so the error is visible, and the report shows it.
    """
    from medcore.nights.registry import promote_condition, registry_of

    run = RunLayout(Path(runs_root), run_id)
    info = read_json(run.run_json)
    if not info["jobs"]:  # the plan was refused: nothing to decide, and promotion.json would claim a decision
        log.info("promote: nothing was planned (%s)", info.get("plan_error"))
        return {"run_id": run_id, "promotion": None, "decisions": {}}
    config = load_config(info["config"])
    registry = registry_of(config)
    profiles: dict[str, list[str]] = {}
    for job in info["jobs"]:
        profiles.setdefault(job["condition"], []).append(job["profile"])
    decided, decisions, errors = now(), {}, []
    for condition, names in profiles.items():
        try:
            decisions[condition] = promote_condition(
                registry, condition, [run.model(condition, p) for p in names], run_id, config.registry, decided
            )
        except Exception as exc:  # noqa: BLE001 the registry of one condition must not cost the others their decision
            log.error("promote %s: %s", condition, one_line(exc))
            decisions[condition] = {"condition": condition, "decision": "error", "reason": one_line(exc)}
            errors.append(f"{condition}: {one_line(exc)}")
    write_json(
        run.promotion_json,
        {
            "run_id": run_id,
            "decided": decided,
            "registry": registry.root,
            "gates": dict(config.registry.gates),
            "min_tier": config.registry.min_tier,
            "margin": config.registry.margin,
            "selection_split": "val",
            "conditions": decisions,
        },
    )
    for condition, decision in decisions.items():
        log.info("champion %s: %s (%s)", condition, decision["decision"], decision["reason"])
    if errors:
        raise StageError(f"promotion failed for {len(errors)} condition(s): {'; '.join(errors)}")
    return {
        "run_id": run_id,
        "promotion": str(run.promotion_json),
        "decisions": {c: d["decision"] for c, d in decisions.items()},
    }


def report(run_id: str, runs_root: str | os.PathLike[str]) -> dict[str, Any]:
    """Render the run's status report; return its path and the count of failed models."""
    from medcore.report.render import write_report

    return write_report(RunLayout(Path(runs_root), run_id))


def notify(
    run_id: str,
    runs_root: str | os.PathLike[str],
    to: Iterable[str] = (),
    config_path: str | None = None,
    deliver: Deliver | None = None,
) -> dict[str, Any]:
    """E-mail the written report; return what happened (also in notify.json). Never raises for a failed send.

    Recipients: `to` (`medcore resend --to`), else the trigger parameter `recipients`, else the config's
    `notify.recipients`; the SMTP connection id: the trigger parameter `smtp_conn_id`, else the config's.
    """
    from medcore.jsonio import to_jsonable
    from medcore.report.notify import send_report

    run = RunLayout(Path(runs_root), run_id)
    info = read_json(run.run_json)
    settings = load_config(config_path or info["config"]).notify
    params = info.get("params") or {}
    chosen = recipients(to) or recipients(params.get("recipients"))
    if chosen:
        settings = dataclasses.replace(settings, recipients=tuple(chosen))
    if params.get("smtp_conn_id"):
        settings = dataclasses.replace(settings, conn_id=str(params["smtp_conn_id"]))
    return to_jsonable(send_report(run, settings, deliver or through_airflow))


def through_airflow(email: Email, conn_id: str, recipients: tuple[str, ...], from_email: str | None = None) -> None:
    """Send by the adapter, the one module that meets Airflow (its SMTP hook and connections). Airflow is
    imported only when there is something to send: `medcore run` with no recipients never loads it."""
    from medcore.airflow_adapter import deliver

    deliver(email, conn_id, recipients, from_email)


def verdict(summary: dict[str, Any]) -> str:
    """The run's verdict as the report computed it (summary.json): raise StageError if it is "failed" or the
    report e-mail failed; return its words otherwise ("look: ..." or "OK: ...")."""
    problems = []
    if summary.get("plan_error"):
        problems.append(f"the run did not start: {summary['plan_error']}")
    if summary["failed"]:
        names = ", ".join(f"{f['condition']}/{f['profile']} ({f['stage']})" for f in summary["failures"])
        problems.append(f"{summary['failed']} of {summary['planned']} models failed: {names}")
    run = RunLayout(Path(summary["report"]).parent.parent, summary["run_id"])
    delivery = read_json(run.notify_json) if run.notify_json.exists() else {}
    if delivery.get("status") == "failed":
        problems.append(
            f"the report e-mail was not sent ({delivery.get('error')}); the report is at {summary['report']}"
        )
    if problems:
        raise StageError(f"{summary.get('verdict_words') or 'failed'}; " + "; ".join(problems))
    words = summary.get("verdict_words") or "OK"
    log.log(
        logging.WARNING if summary.get("verdict") == "look" else logging.INFO,
        "verdict %s (%s)",
        words,
        summary.get("verdict_why") or "nothing needs a person",
    )
    return words
