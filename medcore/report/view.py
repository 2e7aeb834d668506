"""The report's view: every value the templates show, computed from the files a run's stages wrote."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medcore.config import METRICS, TIER_ORDER
from medcore.jsonio import read_json
from medcore.layout import ModelLayout, RunLayout
from medcore.report.advice import (
    FAILED,
    FIRST_SCREEN_STEPS,
    diagnose,
    fmt,
    issues,
    next_steps,
    run_status,
    run_verdict,
    worse_than_chance,
)
from medcore.report.compare import champions_of, conditions_overview

__all__ = ["gather_run", "night_budget_view", "artifact_tree"]


def _maybe(path: Path) -> Any:
    return read_json(path) if path.exists() else None


# The report's view: `gather_run` computes every value the templates show (figures, fallbacks, rankings,
# sentences); the templates only lay them out. To show something new, add a key to the view here (or to a
# model's view in `_model_view`), then render it in templates/status_report.md.j2.


def gather_run(run: RunLayout) -> dict[str, Any]:
    """Everything the report shows, computed from the files the stages wrote."""
    info = read_json(run.run_json)
    if info.get("plan_error"):
        return _not_started_view(run, info)
    models = [_model_view(run, j["condition"], j["profile"]) for j in info["jobs"]]
    champions, promotion = champions_of(run, info, models)
    key_figures = _key_figures(models, champions)
    succeeded = [m for m in models if m["succeeded"]]
    skipped = [m for m in models if m["status"] == "skipped"]  # unchanged since the champion: nothing to train
    now = dt.datetime.now(dt.UTC)
    view = {
        "run_id": info["run_id"],
        "generated": now.isoformat(timespec="seconds"),
        "started": info["started"],
        "wall_minutes": (now - dt.datetime.fromisoformat(info["started"])).total_seconds() / 60.0,
        "train_minutes": sum(m["training"]["wall_seconds"] for m in models if m["training"]) / 60.0,
        "config": info["config"],
        "data_root": info["data_root"],
        "params": info.get("params", {}),
        "models": models,
        "failures": [m for m in models if m["failed"]],
        "models_by_tier": _by_tier(models),
        "planned": len(models),
        "succeeded": len(succeeded),
        "failed": len(models) - len(succeeded) - len(skipped),
        "skipped": len(skipped),
        "success_rate": len(succeeded) / (len(models) - len(skipped)) if len(models) > len(skipped) else 1.0,
        "status": run_status(len(models), len(succeeded), len(skipped)),
        "best": key_figures["best"],
        "mean_auc": key_figures["means"]["roc_auc"],
        "key_figures": key_figures,
        "champions": champions,
        "promotion": promotion,
        "issues": issues(models),
        "training_method": _training_method(models),
        "artifact_tree": artifact_tree(run.root, written_now=(run.report_md.name, run.summary_json.name)),
    }
    view["night"] = night_budget_view(run, info, view["wall_minutes"])
    from medcore.nights.nightly import nights_view

    view["nights"] = nights_view(run, info, models, (promotion or {}).get("conditions") or {})
    view["gradcam_usage"] = _gradcam_usage(models, champions, view)
    view["overview"] = conditions_overview(run, info, models, champions)
    for row in view["overview"]:  # the nightly trend plot beside the trend words
        plot = next((n["trend_plot"] for n in view.get("nights", []) if n["condition"] == row["condition"]), None)
        if plot:
            row["trend"] = f"{row['trend']} · [plot]({plot})"
    steps = next_steps(view)
    view["next_steps"], view["more_steps"] = steps[:FIRST_SCREEN_STEPS], steps[FIRST_SCREEN_STEPS:]
    view["verdict"] = run_verdict(view["overview"], failed=view["failed"])
    return view


def night_budget_view(run: RunLayout, info: dict[str, Any], took_minutes: float) -> dict[str, Any] | None:
    """The night plan against what happened: planned and actual minutes, per chain and for the night, and the cuts.

    A chain's actual minutes are its stages' seconds (timings.json); its error is predicted / actual - 1.
    None for a run planned before the planner existed (no plan.json).
    """
    plan = _maybe(run.plan_json)
    if plan is None:
        return None
    chains = []
    for c in plan.get("chains", []):
        timings = _maybe(run.model(c["condition"], c["profile"]).timings_json) or {}
        actual = sum(t.get("seconds") or 0.0 for t in timings.values()) / 60.0 if timings else None
        predicted = (c.get("predicted_minutes") or {}).get("total")
        error = predicted / actual - 1 if actual and predicted else None
        chains.append(
            {
                "label": f"{c['condition']}/{c['profile']}",
                "epochs": c.get("epochs"),
                "epochs_asked": c.get("epochs_asked"),
                "predicted_minutes": predicted,
                "actual_minutes": actual,
                "error": error,
                "stages": sorted(timings),
            }
        )
    measured = [c for c in chains if c["error"] is not None]
    return {
        "budget_minutes": plan.get("budget_minutes"),
        "planned_minutes": plan.get("predicted_minutes"),
        "full_plan_minutes": plan.get("full_plan_minutes"),
        "took_minutes": took_minutes,
        "fits": plan.get("fits"),
        "cpu_id": plan.get("cpu_id"),
        "speed_source": plan.get("speed_source"),
        "cuts": plan.get("cuts", []),
        "notes": plan.get("notes", []),
        "chains": chains,
        "worst_chain_error": max((abs(c["error"]) for c in measured), default=None),
    }


def _not_started_view(run: RunLayout, info: dict[str, Any]) -> dict[str, Any]:
    """The view of a run whose plan was refused: nothing trained, the one sentence why."""
    return {
        "run_id": info["run_id"],
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "started": info["started"],
        "config": info.get("config"),
        "params": info.get("params") or {},
        "plan_error": info["plan_error"],
        "models": [],
        "planned": 0,
        "succeeded": 0,
        "failed": 0,
        "skipped": 0,
        "nights": [],
        "verdict": {
            "state": FAILED,
            "needs": [],
            "words": "failed: the run did not start",
            "why": info["plan_error"],
        },
    }


def _model_view(run: RunLayout, condition: str, profile: str) -> dict[str, Any]:
    """One (condition, profile): its records as the stages wrote them, plus the values the report shows of them."""
    from medcore.nights.registry import test_split_fingerprint

    paths, run_root = run.model(condition, profile), run.root
    gradcam = _maybe(paths.gradcam_json)
    plan = _maybe(paths.nightly_json) or {}
    status, failure = _status(paths, gradcam, plan)
    overlays = [{**o, "file": _relative(o["file"], run_root)} for o in (gradcam or {}).get("overlays", [])]
    metrics = _maybe(paths.metrics_json)
    training = _maybe(paths.training_json)
    validation = _maybe(paths.validation_json)
    m = {
        "condition": condition,
        "profile": profile,
        "label": f"{condition}/{profile}",
        "status": status,
        "succeeded": status == "succeeded",
        "failed": status in ("failed", "incomplete"),  # a skipped chain (nothing changed) is neither
        "nightly": plan or None,
        "failure": failure,
        "validation": validation,
        "training": training,
        "metrics": metrics,
        # Every path relative to the run folder, so report.md, the e-mail and the UI page resolve them alike.
        "gradcam": {
            **_relative_paths(gradcam or {}, run_root, ("contact_sheet",)),
            "layer": (gradcam or {}).get("layer"),
            "overlays": overlays,
            "faithfulness": _relative_paths((gradcam or {}).get("faithfulness"), run_root, ("plot",)),
            "probes": _relative_paths((gradcam or {}).get("probes"), run_root, ("plot",)),
            "not_evidence": (gradcam or {}).get("not_evidence") or [],
        },
        "plots": {name: _relative(file, run_root) for name, file in ((metrics or {}).get("plots") or {}).items()},
        "model_path": paths.model if paths.model.exists() else None,
        "test_split": test_split_fingerprint(paths.split_csv),
        "dataset_fingerprint": (validation or {}).get("fingerprint"),
        "split_counts": _split_counts(validation),
        "model_card": _relative(paths.model_card, run_root) if paths.model_card.exists() else None,
    }
    m.update(_figures_view(m, metrics or {}, training))
    m["worse_than_chance"] = worse_than_chance(m)
    return m


def _status(paths: ModelLayout, gradcam: Any, plan: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The chain's status (failed, succeeded, skipped or incomplete) and its failure record, if any."""
    failure = _maybe(paths.failure_json)
    status = (
        "failed" if failure else "succeeded" if gradcam else "skipped" if plan.get("mode") == "skip" else "incomplete"
    )
    if status == "incomplete":
        # No failure was recorded (the worker died, or an upstream stage never ran): name where it stopped.
        done = [
            s
            for s, p in (
                ("validate", paths.split_csv),
                ("train", paths.training_json),
                ("evaluate", paths.metrics_json),
            )
            if p.exists()
        ]
        stages = ["validate", "train", "evaluate", "gradcam"]
        failure = {"stage": stages[len(done)], "error": "the stage did not finish and recorded no error"}
    return status, failure


def _figures_view(m: dict[str, Any], metrics: dict[str, Any], training: Any) -> dict[str, Any]:
    """The figures the report shows of one model's metrics, and the diagnosis of a failed one."""
    from medcore.nights.registry import figure

    quality = metrics.get("quality") or {}
    return {
        "roc_auc": figure(metrics, "roc_auc") if m["succeeded"] else None,
        "tier": quality.get("tier") or "n/a",
        "quality": quality,
        "figures": _figures(metrics),
        "calibration": _calibration_view(metrics.get("calibration")),
        "image_level": _figures(metrics["image_level"]) if metrics.get("image_level") else None,
        "bootstrap": _bootstrap_view(metrics.get("bootstrap") or {}),
        "threshold": _threshold_view(metrics),
        "faithfulness": m["gradcam"]["faithfulness"],
        "train_minutes": training["wall_seconds"] / 60 if training else None,
        "diagnosis": diagnose(m) if m["failed"] else None,
    }


def _figures(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {"value": metrics.get(name), **((metrics.get("intervals") or {}).get(name) or {})} for name in METRICS
    }


def _calibration_view(calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """ECE and Brier before and after temperature scaling, each as {value, low, high} for the `ci` filter."""
    if not calibration or "before" not in calibration:
        return None
    return {
        **calibration,
        **{
            f"{when}_{name}": {
                "value": calibration[when][name]["value"],
                **(calibration[when][name].get("interval") or {}),
            }
            for when in ("before", "after")
            for name in ("calibration_error", "brier")
        },
    }


def _bootstrap_view(boot: dict[str, Any]) -> dict[str, Any]:
    if not boot:
        return {}
    return {
        **boot,
        "percent": f"{100 * boot['confidence']:g}",
        "units": "patients" if boot.get("unit") in ("patient", "patient group") else "images",
    }


def _threshold_view(metrics: dict[str, Any]) -> dict[str, Any]:
    """How the decision threshold was chosen, in words."""
    choice, rule = metrics.get("threshold_choice") or {}, metrics.get("threshold_rule")
    if rule in ("youden", "youden_j"):
        how = "Youden's J"
    elif rule == "sensitivity":
        how = f"target sensitivity {fmt(choice.get('target_sensitivity'), 2)}"
    else:
        how = "an unrecorded rule"
    return {
        "value": metrics.get("threshold"),
        "how": how,
        "choice": choice,
        "chosen_on": metrics.get("threshold_split") or "n/a",
        "applied_to": metrics.get("evaluated_split") or "n/a",
    }


def _split_counts(validation: dict[str, Any] | None) -> dict[str, dict[str, int] | None]:
    counts = (validation or {}).get("counts") or {}
    return {
        split: {"total": sum(counts[split].values()), "positive": counts[split].get("positive", 0)}
        if counts.get(split)
        else None
        for split in ("train", "val", "test")
    }


def _by_tier(models: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Successful models grouped by quality tier, best tier first (as the seed report was read)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        if m["succeeded"]:
            groups.setdefault(m["quality"].get("tier") or "no tier", []).append(m)
    order = {t: i for i, t in enumerate(TIER_ORDER)}
    return sorted(groups.items(), key=lambda item: order.get(item[0], len(order)))


def _training_method(models: list[dict[str, Any]]) -> dict[str, Any]:
    records = [m["training"] for m in models if m["training"]]
    if not records:
        return {}
    first = records[0]
    threads = first.get("threads") or {}
    shown = (
        f"{threads.get('intra_op') or 'default'} intra-op / {threads.get('inter_op') or 'default'} inter-op"
        if isinstance(threads, dict)
        else str(threads or "default")
    )
    return {
        "device": first.get("device"),
        "precision": first.get("precision"),
        "threads": shown,
        "execution": sorted({r.get("execution") for r in records}),
        "versions": first.get("versions", {}),
    }


def _relative(path: Any, run_root: Path) -> Any:
    """`path` relative to the run folder (POSIX) when it lies inside it; anything else unchanged."""
    if not isinstance(path, (str, Path)) or not str(path):
        return path
    candidate = Path(path)
    if not candidate.is_absolute():
        return candidate.as_posix()
    for inside, root in ((candidate, Path(run_root)), (candidate.resolve(), Path(run_root).resolve())):
        try:
            return inside.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(path)


def _relative_paths(record: Any, run_root: Path, keys: Sequence[str]) -> Any:
    if not isinstance(record, dict):
        return record
    return {**record, **{key: _relative(record[key], run_root) for key in keys if record.get(key)}}


def _key_figures(models: list[dict[str, Any]], champions: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and weakest model, means over the successful ones, models per tier, early stops, decisions."""
    from medcore.nights.registry import figure

    done = [m for m in models if m["succeeded"]]
    means = {}
    for name in ("accuracy", "precision", "recall", "specificity", "roc_auc"):
        values = [v for v in (figure(m["metrics"], name) for m in done) if v is not None]
        means[name] = sum(values) / len(values) if values else None
    ranked = [m for m in done if m["roc_auc"] is not None]
    order = []
    for m in done:  # tier names best first, as evaluation configured them, then whatever else appears
        order += [t for t in (m["quality"].get("tiers") or {}) if t not in order]
    tiers = [m["tier"] for m in done]
    for tier in ("insufficient", *tiers):
        if tier not in order:
            order.append(tier)
    return {
        "best": max(ranked, key=lambda m: m["roc_auc"]) if ranked else None,
        "worst": min(ranked, key=lambda m: m["roc_auc"]) if len(ranked) > 1 else None,
        "means": means,
        "tiers": [(t, tiers.count(t)) for t in order if t in tiers],
        "early_stopped": sum(1 for m in done if (m["training"] or {}).get("early_stopped")),
        "decisions": {
            d: sum(1 for c in champions if c["decision"] == d) for d in dict.fromkeys(c["decision"] for c in champions)
        },
    }


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n} B"


def artifact_tree(root: Path, written_now: Sequence[str] = (), expand_depth: int = 2) -> list[str]:
    """The run folder as tree lines; folders deeper than `expand_depth` collapse to a file count and size.

    `written_now` names top-level files the caller is about to write (the report itself), so the
    tree shows them on the report's very first rendering too.
    """
    root = Path(root)
    lines = [f"{root.name}/"]

    def walk(folder: Path, prefix: str, depth: int, extra: Sequence[str] = ()) -> None:
        entries = sorted(
            (p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: (p.is_dir(), p.name)
        )
        names = {p.name for p in entries}
        pending = [n for n in extra if n not in names]
        items: list[tuple[str, Path | None]] = [(p.name, p) for p in entries if p.is_file()]
        items += [(n, None) for n in pending] + [(p.name, p) for p in entries if p.is_dir()]
        for i, (name, path) in enumerate(items):
            last = i == len(items) - 1
            branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
            if path is None:
                lines.append(f"{prefix}{branch}{name} (this report)")
            elif path.is_file():
                lines.append(f"{prefix}{branch}{name} ({_size(path.stat().st_size)})")
            elif depth >= expand_depth:
                files = [f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")]
                lines.append(
                    f"{prefix}{branch}{name}/ ({len(files)} files, {_size(sum(f.stat().st_size for f in files))})"
                )
            else:
                lines.append(f"{prefix}{branch}{name}/")
                walk(path, prefix + indent, depth + 1)

    if root.is_dir():
        walk(root, "", 0, written_now)
    return lines


def _gradcam_usage(
    models: list[dict[str, Any]], champions: list[dict[str, Any]], context: dict[str, Any]
) -> dict[str, Any] | None:
    """Layer, model path and input size for the report's Grad-CAM snippet: the registry copy when the best
    model became champion (it outlives the run), else the run's own best model, else any champion."""
    best = context.get("best")
    if best and best.get("model_path"):
        champion = (
            next(
                (
                    c.get("champion")
                    for c in champions
                    if c["condition"] == best["condition"] and c["decision"] == "promoted"
                ),
                None,
            )
            or {}
        )
        same = champion.get("run_id") == context["run_id"] and champion.get("profile") == best["profile"]
        return {
            "layer": best["gradcam"].get("layer") or "relu",
            "model_path": champion["model_path"] if same else best["model_path"],
            "image_size": (best["training"] or {}).get("image_size"),
            "what": f"{best['condition']}/{best['profile']}" + (" (champion copy in the registry)" if same else ""),
        }
    for c in champions:
        champion = c.get("champion") or {}
        if champion.get("model_path"):
            metrics = champion.get("metrics") or {}
            return {
                "layer": "relu",
                "model_path": champion["model_path"],
                "image_size": metrics.get("image_size"),
                "what": f"the {c['condition']} champion ({champion['run_id']}/{champion['profile']})",
            }
    return None
