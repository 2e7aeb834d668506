"""The status report: gathered from the run's artefacts, rendered with Jinja2."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from medcore.jsonio import atomic_write_text, read_json, to_jsonable, write_json
from medcore.layout import ModelLayout, RunLayout

__all__ = ["gather_run", "render_report", "write_report", "TEMPLATES_DIR"]

TEMPLATES_DIR = Path(os.environ.get("MEDCORE_TEMPLATES", Path(__file__).resolve().parent.parent / "templates"))


def _maybe(path: Path) -> Any:
    return read_json(path) if path.exists() else None


def _model_status(paths: ModelLayout, run_root: Path) -> dict[str, Any]:
    failure = _maybe(paths.failure_json)
    gradcam = _maybe(paths.gradcam_json)
    status = "failed" if failure else "succeeded" if gradcam else "incomplete"
    if status == "incomplete":
        # No failure was recorded (the worker died, or an upstream stage never ran): name where it stopped.
        done = [s for s, p in (("validate", paths.split_csv), ("train", paths.training_json),
                               ("evaluate", paths.metrics_json)) if p.exists()]
        stages = ["validate", "train", "evaluate", "gradcam"]
        failure = {"stage": stages[len(done)], "error": "the stage did not finish and recorded no error"}
    overlays = [{**o, "file": os.path.relpath(o["file"], run_root)} for o in (gradcam or {}).get("overlays", [])]
    return {
        "condition": paths.condition,
        "profile": paths.profile,
        "status": status,
        "failure": failure,
        "validation": _maybe(paths.validation_json),
        "training": _maybe(paths.training_json),
        "metrics": _maybe(paths.metrics_json),
        "gradcam": {"layer": (gradcam or {}).get("layer"), "overlays": overlays},
        "model_path": paths.model if paths.model.exists() else None,
    }


def gather_run(run: RunLayout) -> dict[str, Any]:
    """Everything the report shows, computed from the files the stages wrote."""
    info = read_json(run.run_json)
    models = [_model_status(run.model(j["condition"], j["profile"]), run.root) for j in info["jobs"]]
    succeeded = [m for m in models if m["status"] == "succeeded"]
    now = dt.datetime.now(dt.timezone.utc)
    started = dt.datetime.fromisoformat(info["started"])
    aucs = [m["metrics"]["roc_auc"] for m in succeeded if m["metrics"].get("roc_auc") is not None]
    train_seconds = sum(m["training"]["wall_seconds"] for m in models if m["training"])
    warnings = {}
    for m in models:
        for f in (m["validation"] or {}).get("findings", []):
            if f["severity"] != "info":
                warnings.setdefault((f["code"], f["severity"]), []).append(f"{m['condition']}/{m['profile']}: {f['message']}")
    return {
        "run_id": info["run_id"],
        "generated": now.isoformat(timespec="seconds"),
        "started": info["started"],
        "wall_minutes": (now - started).total_seconds() / 60.0,
        "train_minutes": train_seconds / 60.0,
        "config": info["config"],
        "data_root": info["data_root"],
        "params": info.get("params", {}),
        "models": models,
        "planned": len(models),
        "succeeded": len(succeeded),
        "failed": len(models) - len(succeeded),
        "success_rate": len(succeeded) / len(models) if models else 0.0,
        "status": "all models succeeded" if len(succeeded) == len(models) else
                  "no model succeeded" if not succeeded else "some models failed",
        "best": max(succeeded, key=lambda m: m["metrics"].get("roc_auc") or 0.0) if succeeded else None,
        "mean_auc": sum(aucs) / len(aucs) if aucs else None,
        "issues": [{"code": c, "severity": s, "where": w} for (c, s), w in sorted(warnings.items())],
        "training_method": _training_method(models),
    }


def _training_method(models: list[dict[str, Any]]) -> dict[str, Any]:
    records = [m["training"] for m in models if m["training"]]
    if not records:
        return {}
    first = records[0]
    return {"device": first.get("device"), "precision": first.get("precision"), "threads": first.get("threads"),
            "execution": sorted({r.get("execution") for r in records}), "versions": first.get("versions", {})}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_report(context: dict[str, Any], template: str = "status_report.md.j2") -> str:
    """Render `context` through a template in `templates/`."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = _fmt
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"
    return env.get_template(template).render(**context)


def write_report(run: RunLayout) -> dict[str, Any]:
    """Gather, render and atomically write `report.md` and `summary.json`; return the summary."""
    context = gather_run(run)
    atomic_write_text(run.report_md, render_report(context))
    summary = {"run_id": context["run_id"], "report": run.report_md, "planned": context["planned"],
               "succeeded": context["succeeded"], "failed": context["failed"],
               "failures": [{"condition": m["condition"], "profile": m["profile"], **m["failure"]}
                            for m in context["models"] if m["status"] != "succeeded"]}
    write_json(run.summary_json, summary)
    return to_jsonable(summary)  # XCom and callers get plain JSON types
