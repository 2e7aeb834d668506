"""The status report: gathered from the run's artefacts, rendered with Jinja2."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from medcore.config import CHECKS, DEFAULT_FIX, METRICS, TIER_ORDER, settings
from medcore.jsonio import atomic_write_text, read_json, to_jsonable, write_json
from medcore.layout import RunLayout

__all__ = [
    "gather_run",
    "night_budget_view",
    "render_report",
    "write_report",
    "render_html",
    "markdown_to_html",
    "next_steps",
    "diagnose",
    "conditions_overview",
    "with_contents",
    "anchor",
    "TEMPLATES_DIR",
    "shortcut_findings",
]

TEMPLATES_DIR = settings().templates or Path(__file__).resolve().parents[2] / "templates"


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
    champions, promotion = _champions(run, info, models)
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
        "status": "all models succeeded"
        if len(succeeded) == len(models)
        else "nothing changed since the champions"
        if len(skipped) == len(models)
        else "every model succeeded or was skipped"
        if len(succeeded) + len(skipped) == len(models)
        else "no model succeeded"
        if not succeeded
        else "some models failed",
        "best": key_figures["best"],
        "mean_auc": key_figures["means"]["roc_auc"],
        "key_figures": key_figures,
        "champions": champions,
        "promotion": promotion,
        "issues": _issues(models),
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


# The run's one verdict: the e-mail subject, the report's title and first screen, the Reports list and the DAG's
# verdict task all read it from summary.json, so none of them can say "OK" while another says "look".
OK, LOOK, FAILED = "OK", "look", "failed"


def run_verdict(overview: list[dict[str, Any]], failed: int = 0) -> dict[str, Any]:
    """OK / look / failed from the first screen's rows: failed if a model failed, look if a condition needs a
    person, else OK; `needs` names the conditions that need one, `words` is the line every rendering shows
    ("look: pneumonia, limb") and `why` what each needs, as the first screen says it."""
    needs = [r["condition"] for r in overview if r["state"] != "ok"]
    state = FAILED if failed or any(r["state"] == "failed" for r in overview) else LOOK if needs else OK
    words = "OK: nothing needs a person" if state == OK else f"{state}: {', '.join(needs) or 'see the report'}"
    why = "; ".join(f"{r['condition']}: {r['needs']}" for r in overview if r["state"] != "ok")
    return {"state": state, "needs": needs, "words": words, "why": why}


def _model_view(run: RunLayout, condition: str, profile: str) -> dict[str, Any]:
    """One (condition, profile): its records as the stages wrote them, plus the values the report shows of them."""
    from medcore.nights.registry import figure, test_split_fingerprint

    paths, run_root = run.model(condition, profile), run.root
    failure = _maybe(paths.failure_json)
    gradcam = _maybe(paths.gradcam_json)
    plan = _maybe(paths.nightly_json) or {}
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
    metrics = metrics or {}
    quality = metrics.get("quality") or {}
    m.update(
        {
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
    )
    m["worse_than_chance"] = worse_than_chance(m)
    return m


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
        how = f"target sensitivity {_fmt(choice.get('target_sensitivity'), 2)}"
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


def _issues(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation warnings and errors by (code, severity), then warnings from training, evaluation and Grad-CAM."""
    found: dict[tuple[str, str], list[str]] = {}
    for m in models:
        for f in (m["validation"] or {}).get("findings", []):
            if f["severity"] != "info":
                found.setdefault((f["code"], f["severity"]), []).append(f"{m['label']}: {f['message']}")
    return [{"code": c, "severity": s, "where": w} for (c, s), w in sorted(found.items())] + _more_issues(models)


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


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_interval(shown: dict[str, Any]) -> str:
    """A figure with its bootstrap interval, "0.91 (0.87–0.94)"; without one, three digits as it is."""
    if shown.get("value") is None:
        return "n/a"
    if shown.get("low") is not None and shown.get("high") is not None:
        return f"{shown['value']:.2f} ({shown['low']:.2f}–{shown['high']:.2f})"
    return _fmt(shown["value"])


def render_report(context: dict[str, Any], template: str = "status_report.md.j2") -> str:
    """Render `context` through a template in `templates/`."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["ci"] = _with_interval
    env.filters["delta"] = lambda v, digits=3: "n/a" if v is None else f"{v:+.{digits}f}"
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"
    return env.get_template(template).render(**context)


def write_report(run: RunLayout) -> dict[str, Any]:
    """Gather, render and atomically write `report.md` and `summary.json`; return the summary."""
    context = gather_run(run)
    template = "not_started.md.j2" if context.get("plan_error") else "status_report.md.j2"
    atomic_write_text(run.report_md, with_contents(render_report(context, template)))
    summary = {
        "run_id": context["run_id"],
        "report": run.report_md,
        "verdict": context["verdict"]["state"],
        "verdict_words": context["verdict"]["words"],
        "verdict_why": context["verdict"]["why"],
        "needs": context["verdict"]["needs"],
        "plan_error": context.get("plan_error"),
        "planned": context["planned"],
        "succeeded": context["succeeded"],
        "failed": context["failed"],
        "skipped": context["skipped"],
        "failures": [
            {"condition": m["condition"], "profile": m["profile"], **m["failure"]}
            for m in context["models"]
            if m["failed"]
        ],
        "nights": {n["condition"]: n["summary"] for n in context["nights"]},
        "night": context.get("night"),
    }
    write_json(run.summary_json, summary)
    return to_jsonable(summary)  # XCom and callers get plain JSON types


def render_html(
    markdown_text: str,
    *,
    title: str,
    link: Callable[[str], str | None] | None = None,
    banners: Sequence[str] = (),
    script: bool = True,
) -> str:
    """The report as one HTML page (for the e-mail and the Airflow UI): report.md converted, never re-written.

    Converting the very Markdown people read keeps the three renderings (file, e-mail, UI) from
    drifting apart. `banners` are plain-text warnings shown above the report (e.g. a failed e-mail).
    `script`: the few lines that open a collapsed section when a contents link points into it (not for e-mail).
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined, autoescape=True
    )
    body = markdown_to_html(markdown_text, link)
    return env.get_template("status_report.html.j2").render(
        title=title, body=Markup(body), banners=list(banners), script=script
    )


def markdown_to_html(text: str, link: Callable[[str], str | None] | None = None) -> str:
    """CommonMark with tables to HTML. Raw HTML in the text is escaped, never passed through.

    `link` maps every relative image source or link target (a path inside the run folder) to a URL
    the reader can open; returning None shows an image's alt text, or a link's text, instead.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    tokens = md.parse(text)
    for block in tokens:
        if block.children and link is not None:
            block.children = _relink(block.children, link)
    return md.renderer.render(_collapsible(tokens), md.options, {})


# Second-level sections for reference rather than for the morning: collapsed in HTML, like each model's section.
COLLAPSED_SECTIONS = (
    "Issues encountered",
    "Run parameters",
    "Data",
    "Artifacts of this run",
    "Grad-CAM on a new image",
    "More next steps",
)


def _collapsible(tokens: list) -> list:
    """Every h2/h3 gets the id `anchor` gives it (the contents link to them); each h3 section (one model) and each
    COLLAPSED_SECTIONS h2 becomes a closed <details> whose <summary> is the heading. Markdown's own raw HTML stays
    escaped: these tags are made here, never taken from the text."""
    from markdown_it.token import Token

    def html(content: str) -> Token:
        token = Token("html_block", "", 0)
        token.content = content
        return token

    out, open_levels, in_summary = [], [], False
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag in ("h2", "h3"):
            level = int(token.tag[1])
            while open_levels and open_levels[-1] >= level:
                open_levels.pop()
                out.append(html("</details>\n"))
            text = tokens[i + 1].content
            token.attrSet("id", anchor(text))
            if level == 3 or text in COLLAPSED_SECTIONS:
                open_levels.append(level)
                out.append(html("<details>\n<summary>"))
                in_summary = True
        out.append(token)
        if token.type == "heading_close" and in_summary:
            out.append(html("</summary>\n"))
            in_summary = False
    out.extend(html("</details>\n") for _ in open_levels)
    return out


def _is_relative(url: str | None) -> bool:
    from urllib.parse import urlsplit

    if not url or url.startswith(("/", "#")):
        return False
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc


def _relink(children: list, link: Callable[[str], str | None]) -> list:
    from markdown_it.token import Token

    out, dropping = [], False
    for token in children:
        if token.type == "image" and _is_relative(token.attrGet("src")):
            target = link(str(token.attrGet("src")))
            if target is None:
                out.append(Token("text", "", 0, content=f"[{token.content}]"))
                continue
            token.attrSet("src", target)
        elif token.type == "link_open" and _is_relative(token.attrGet("href")):
            target = link(str(token.attrGet("href")))
            if target is None:
                dropping = True  # keep the link's text, drop the link
                continue
            token.attrSet("href", target)
        elif token.type == "link_close" and dropping:
            dropping = False
            continue
        out.append(token)
    return out


# --------------------------------------------------------------------------- beyond the seed report


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


def _champions(
    run: RunLayout, info: dict[str, Any], models: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Each condition's champion decision (from promotion.json, else the registry as it stands) and the run's
    promotion record; each model also gets its change since the previous run and against the champion before."""
    promotion = _maybe(run.promotion_json)
    decisions = (promotion or {}).get("conditions") or {}
    conditions = list(dict.fromkeys(m["condition"] for m in models))
    # Without promotion.json (promote failed or never ran) the registry itself still says who the champion is.
    fallback = {} if promotion else _registry_champions(info, conditions)
    earlier = _earlier_runs(run, info)
    for m in models:
        m["previous"] = _versus_previous(m, earlier)
        before = (
            (decisions.get(m["condition"]) or {}).get("champion_before") if promotion else fallback.get(m["condition"])
        )
        m["versus_champion"] = _versus_champion(m, before)
    champions = []
    for condition in conditions:
        decision = decisions.get(condition)
        if decision is None:
            decision = {
                "decision": "not decided",
                "champion": fallback.get(condition),
                "reason": "the promote stage did not run (or failed) for this run; the registry is unchanged",
            }
        champions.append({"condition": condition, "candidate": None, "champion_before": None, **decision})
    return champions, promotion


def _registry_champions(info: dict[str, Any], conditions: Sequence[str]) -> dict[str, Any]:
    from medcore.config import load_config
    from medcore.errors import MedcoreError
    from medcore.nights.registry import champion_summary, read_record, registry_of

    try:
        config = load_config(info["config"])
        registry = registry_of(config)
        return {c: champion_summary(read_record(registry, c).get("champion")) for c in conditions}
    except (MedcoreError, OSError, ValueError, KeyError):
        return {}  # the report must render even if the config moved since the run


def _earlier_runs(run: RunLayout, info: dict[str, Any], limit: int = 30) -> list[RunLayout]:
    """Runs in the same runs folder that started before this one, newest first."""
    try:
        started = dt.datetime.fromisoformat(info["started"])
        folders = [f for f in Path(run.runs_root).iterdir() if f.is_dir() and f != run.root]
    except (KeyError, ValueError, OSError):
        return []
    found = []
    for folder in folders:
        try:
            other = read_json(folder / "run.json")
            when = dt.datetime.fromisoformat(other["started"])
            if when < started:
                layout = RunLayout(folder.parent, other["run_id"])
                if layout.root == folder:
                    found.append((when, layout))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a run folder, or a half-written one: nothing to compare with
    return [layout for _, layout in sorted(found, key=lambda pair: pair[0], reverse=True)[:limit]]


_COMPARED = ("roc_auc", "accuracy", "recall", "specificity")


def _versus_previous(m: dict[str, Any], earlier: list[RunLayout]) -> dict[str, Any] | None:
    """The latest earlier run in which this (condition, profile) succeeded, and the change since."""
    from medcore.nights.registry import figure, succeeded, test_split_fingerprint

    for other in earlier:
        paths = other.model(m["condition"], m["profile"])
        if not succeeded(paths):
            continue
        then = read_json(paths.metrics_json)
        now = m["metrics"] or {}
        changes = {}
        for name in _COMPARED:
            old, new = figure(then, name), figure(now, name)
            changes[name] = {
                "before": old,
                "after": new,
                "delta": new - old if old is not None and new is not None else None,
            }
        return {
            "run_id": other.run_id,
            "changes": changes,
            "roc_auc": figure(then, "roc_auc"),
            "delta_roc_auc": changes["roc_auc"]["delta"],
            "same_test_split": test_split_fingerprint(paths.split_csv) == m["test_split"],
        }
    return None


def _versus_champion(m: dict[str, Any], champion: dict[str, Any] | None) -> dict[str, Any] | None:
    from medcore.nights.registry import figure

    if not champion:
        return None
    # Re-scored tonight on this model's own test images: the difference compares models, not data.
    versus = (m["metrics"] or {}).get("versus_champion") or {}
    if versus.get("test") and versus.get("champion") == f"{champion['run_id']}/{champion['profile']}":
        return {
            **champion,
            "roc_auc": versus["test"]["champion_auc"],
            "delta_roc_auc": versus["test"]["delta"],
            "same_test_split": True,
            "rescored": True,
        }
    new = figure(m["metrics"] or {}, "roc_auc")
    old = champion.get("roc_auc")
    return {
        **champion,
        "delta_roc_auc": new - old if new is not None and old is not None else None,
        "same_test_split": m["test_split"] is not None and m["test_split"] == champion.get("test_split_fingerprint"),
    }


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


def _size(n: int) -> str:
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


def _more_issues(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warnings beyond validation: from training (if it records any), evaluation and Grad-CAM."""
    found: dict[tuple[str, str], list[str]] = {}
    for m in models:
        where = f"{m['condition']}/{m['profile']}"
        for text in (m["training"] or {}).get("warnings") or []:
            found.setdefault(("training_warning", "warning"), []).append(f"{where}: {text}")
        for text in (m["metrics"] or {}).get("warnings") or []:
            found.setdefault(("evaluation_warning", "warning"), []).append(f"{where}: {text}")
        undefined = ((m["metrics"] or {}).get("bootstrap") or {}).get("undefined_resamples") or {}
        if undefined:
            worst = max(undefined, key=undefined.get)
            found.setdefault(("bootstrap_undefined", "warning"), []).append(
                f"{where}: some bootstrap resamples left metrics undefined (most: {worst}, {undefined[worst]})"
            )
        faith = (m["gradcam"] or {}).get("faithfulness") or {}
        if faith and faith.get("better_than_random") is False:
            found.setdefault(("gradcam_not_faithful", "warning"), []).append(
                f"{where}: Grad-CAM is no better than random maps in the deletion test"
            )
        for finding in shortcut_findings(m, severity="warning"):
            found.setdefault((finding["code"], finding["severity"]), []).append(f"{where}: {finding['message']}")
    return [{"code": c, "severity": s, "where": w} for (c, s), w in found.items()]


# (words in the error, root cause, fix) — checked in order against the lower-cased error text.
ERROR_HINTS = (
    (
        ("timeout",),
        "the task ran past its execution_timeout and was ended (then retried as configured)",
        "read the task's log for where it hung; if the work is just slow, raise the `tasks` timeouts in the config",
    ),
    (
        ("column", "not found"),
        "the manifest's columns do not match the config",
        "set `image_column` / `label_column` to the manifest's header, or rename the columns",
    ),
    (("out of memory",), "the process ran out of memory", "lower the profile's `batch_size` or `image_size`"),
    (("resourceexhausted",), "TensorFlow ran out of memory", "lower the profile's `batch_size` or `image_size`"),
    (("memoryerror",), "the process ran out of memory", "lower the profile's `batch_size` or `image_size`"),
    (
        ("layer",),
        "the Grad-CAM target layer is not in the model",
        "set `gradcam.layer` to a layer of the model (DenseNet121's last activation is `relu`)",
    ),
    (
        ("needs val and test",),
        "the split has no validation or no test images",
        "give the dataset val/test images, or raise `split.val_fraction` / `split.test_fraction`",
    ),
    (("no such file",), "a file the stage needs is missing", "re-run the upstream stage; check the run folder"),
)
STAGE_FIXES = {
    "validate": "fix the dataset as the findings say, then re-run",
    "train": "read the train task's log; clearing the task retries it and resumes from the last saved epoch",
    "evaluate": "read the evaluate task's log; check split.csv has val and test images of both classes",
    "gradcam": "read the gradcam task's log; check `gradcam.layer` names a layer of the model",
}


def diagnose(m: dict[str, Any]) -> dict[str, str]:
    """Root cause and suggested fix of a failed or incomplete model, from its failure record and findings."""
    failure, stage = m["failure"] or {}, (m["failure"] or {}).get("stage", "?")
    error = str(failure.get("error") or "")
    if m["status"] == "incomplete":
        return {
            "root_cause": f"the {stage} stage never finished and recorded no error: its worker was killed "
            "(often for memory) or the run was stopped",
            "fix": f"read the {stage} task's log in Airflow, then clear the task to retry",
        }
    validation = m["validation"] or {}
    errors = [f for f in validation.get("findings", []) if f.get("severity") == "error"]
    if stage == "validate" and errors:
        first = errors[0]
        return {
            "root_cause": "; ".join(f"`{f['code']}`: {f['message']}" for f in errors[:3]),
            "fix": CHECKS[first["code"]].fix if first["code"] in CHECKS else DEFAULT_FIX,
        }
    lowered = error.lower()
    for words, cause, fix in ERROR_HINTS:
        if all(w in lowered for w in words):
            return {"root_cause": cause, "fix": fix}
    return {
        "root_cause": f"the {stage} stage raised an error (above)",
        "fix": STAGE_FIXES.get(stage, "read the task's log in Airflow"),
    }


def next_steps(context: dict[str, Any]) -> list[str]:
    """What to do after reading this report, most urgent first; advice that fits several models is given once,
    naming them all (ten models that all used every epoch make one step, not ten)."""
    from medcore.nights.registry import figure

    advice: dict[str, list[str]] = {}  # sentence with a {who} slot -> the models or conditions it is for

    def say(sentence: str, who: str = "") -> None:
        advice.setdefault(sentence, []).append(who)

    models = context["models"]
    for m in models:
        if m["failed"]:
            say(f"Fix {{who}} ({m['status']} at {m['failure']['stage']}): {m['diagnosis']['fix']}.", m["label"])
    if models and not any(m["succeeded"] or m["status"] == "skipped" for m in models):
        say("No model succeeded: no champion changed; fix the failures above before the next run.")
    for c in context["champions"]:
        if c["decision"] == "kept champion" and c.get("candidate"):
            say(
                "{who}: the champion stays (see Champion per condition for why); look into why this run was not "
                "better.",
                c["condition"],
            )
        elif c["decision"] == "no champion" and c.get("candidate"):
            mine = [m for m in models if m["condition"] == c["condition"]]
            gates = failed_gates(c, mine)
            if gates:
                say(f"{{who}}: still no champion: {gates}.", c["condition"])
            else:
                say("{who}: still no champion (no model meets the gates); more data may help.", c["condition"])
    undecided = [c["condition"] for c in context["champions"] if c["decision"] in ("error", "not decided")]
    for condition in undecided:
        say(
            "No champion decision was recorded for {who} (the promote stage failed or did not run): read its log, "
            "then clear it to decide again.",
            condition,
        )
    for m in models:
        if not m["succeeded"]:
            continue
        quality = m["metrics"].get("quality") or {}
        minimum = int(quality.get("min_per_class") or MIN_PER_CLASS)
        few = few_positives(m, "test", minimum)
        if worse_than_chance(m):
            say(
                f"{{who}}: worse than chance (test ROC AUC {_with_interval(m['figures']['roc_auc'])}, the whole "
                "interval below 0.5): check the labels and the data before reading anything else of it.",
                m["label"],
            )
        elif quality.get("tier") == "insufficient" and few is not None:
            say(
                f"{{who}}: test tier insufficient because the test split has only {few} positive images (a tier "
                f"needs {minimum} of each class); more positive cases would change it, training longer would not.",
                m["label"],
            )
        elif quality.get("tier") == "insufficient":
            more = ["add data", "train longer"]
            if m["profile"] != "intensive":  # advice must not ask for what the model already had
                more.append("use the intensive profile")
            say(f"{{who}}: test tier insufficient; {_names(more).replace(' and ', ' or ')}.", m["label"])
        training = m["training"] or {}
        if (
            few is None
            and training.get("epochs_run")
            and training.get("epochs_run") == training.get("epochs_planned")
            and not training.get("early_stopped")
        ):
            say("{who}: used every planned epoch without early stopping; more epochs may help.", m["label"])
        faith = m["gradcam"].get("faithfulness") or {}
        if faith and faith.get("better_than_random") is False:
            say("{who}: do not read the Grad-CAM heatmaps as evidence (no better than random).", m["label"])
        elif faith and worse_than_chance(m):
            say("{who}: do not read the Grad-CAM heatmaps as evidence (the model is worse than chance).", m["label"])
        for finding in shortcut_findings(m, severity="warning"):
            say(f"{{who}}: {finding['sentence']} (`{finding['code']}`, see its Shortcut probes).", m["label"])
        previous = m.get("previous") or {}
        drop = previous.get("delta_roc_auc")
        if drop is not None and previous.get("same_test_split") and drop < -FELL:
            say(
                f"{{who}}: test ROC AUC fell {-drop:.3f} since run {previous['run_id']} on the same split; check "
                "the data and training records for what changed.",
                m["label"],
            )
    warnings = [i for i in context["issues"] if i["severity"] == "warning"]
    if warnings:
        say(f"Review the {len(warnings)} kind(s) of warning under Issues encountered.")
    best = figure((context.get("best") or {}).get("metrics") or {}, "roc_auc")
    if not advice:
        say(
            "Nothing needs attention: every model trained and every champion decision is recorded."
            + (f" Best test ROC AUC {best:.3f}." if best is not None else "")
        )
    return [sentence.replace("{who}", _names(who)) for sentence, who in advice.items()]


def _names(names: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    names = [n for n in names if n]
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


# --------------------------------------------------------------------------- the first screen

FIRST_SCREEN_STEPS = 5  # grouped next steps shown first; the rest follow under "More next steps"
MIN_PER_CLASS = 10  # evaluation.min_per_class's default, when a record does not say
FELL = 0.02  # a drop in test ROC AUC on the same split larger than this needs a person
TREND_RUNS = 7  # runs (this one included) the trend looks back over
# Every glyph is followed by its word: without an emoji font the glyph is an empty box, the word still reads.
STATUS = {"ok": "✅ ok", "look": "⚠️ look", "failed": "❌ failed"}
TREND = {"rising": "↗ rising", "falling": "↘ falling", "steady": "→ steady"}


def conditions_overview(
    run: RunLayout, info: dict[str, Any], models: list[dict[str, Any]], champions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One line per condition, for the first screen: status, champion with its test ROC AUC and interval, tonight's
    change against the previous run, the trend over recent runs, and whatever needs a person (else "nothing")."""
    earlier = _earlier_runs(run, info, limit=TREND_RUNS - 1)
    rows = []
    for c in champions:
        mine = [m for m in models if m["condition"] == c["condition"]]
        done = [m for m in mine if m["succeeded"] and m["roc_auc"] is not None]
        skipped = [m for m in mine if m["status"] == "skipped"]  # nothing changed since the champion
        best = max(done, key=lambda m: m["roc_auc"]) if done else None
        needs = _needs_a_person(c, mine, best)
        state = "failed" if any(m["failed"] for m in mine) or not (done or skipped) else "look" if needs else "ok"
        champion = c.get("champion") or {}
        rows.append(
            {
                "condition": c["condition"],
                "state": state,
                "status": STATUS[state],
                "champion": _champion_words(champion, c, info["run_id"]),
                "auc": _auc_words(champion),
                "since": _since_words(best, mine)
                if done or not skipped
                else str((skipped[0].get("nightly") or {}).get("reason") or "skipped").split(":")[0],
                "trend": _trend_words(
                    [_best_auc(other, c["condition"]) for other in reversed(earlier)]
                    + [best["roc_auc"] if best else None]
                ),
                "needs": "; ".join(needs) or "nothing",
            }
        )
    return rows


def _needs_a_person(c: dict[str, Any], mine: list[dict[str, Any]], best: dict[str, Any] | None) -> list[str]:
    needs = []
    failed = [m for m in mine if m["failed"]]
    if failed:
        needs.append(
            f"{len(failed)} of {len(mine)} failed ("
            + ", ".join(f"{m['profile']} at {m['failure']['stage']}" for m in failed)
            + ")"
        )
    if c["decision"] in ("error", "not decided"):
        needs.append("no champion decision recorded")
    elif c["decision"] in ("no champion", "kept champion") and c.get("candidate"):
        gates = failed_gates(c, mine)
        if gates:
            needs.append(("no model meets the gates: " if c["decision"] == "no champion" else "") + gates)
        elif c["decision"] == "no champion":
            needs.append("no model meets the gates")
    for m in mine:
        if worse_than_chance(m):
            needs.append(f"{m['profile']} is worse than chance (test AUC {_with_interval(m['figures']['roc_auc'])})")
    previous = (best or {}).get("previous") or {}
    if previous.get("same_test_split") and (previous.get("delta_roc_auc") or 0.0) < -FELL:
        needs.append(f"test ROC AUC fell {-previous['delta_roc_auc']:.3f}")
    unfaithful = [
        m["profile"] for m in mine if m["succeeded"] and (m["faithfulness"] or {}).get("better_than_random") is False
    ]
    if unfaithful:
        needs.append(f"Grad-CAM no better than random ({', '.join(unfaithful)})")
    shortcuts = sorted({f["code"] for m in mine if m["succeeded"] for f in shortcut_findings(m, severity="warning")})
    if shortcuts:
        needs.append(f"shortcut probe{'s' if len(shortcuts) > 1 else ''} fired: {', '.join(shortcuts)}")
    warned = sum(1 for m in mine for f in (m["validation"] or {}).get("findings", []) if f.get("severity") == "warning")
    if warned:
        needs.append(f"{warned} data warning{'s' if warned != 1 else ''}")
    return needs


def shortcut_findings(m: dict[str, Any], severity: str | None = None) -> list[dict[str, Any]]:
    """The shortcut probes' findings of one model's view (medcore.assess.probes), those of `severity` if given."""
    probes = (m.get("gradcam") or {}).get("probes") or {}
    return [f for f in probes.get("findings") or [] if severity is None or f.get("severity") == severity]


# A gate's figure in a reader's words; every gate is checked on the validation split.
GATE_WORDS = {
    "roc_auc_low": "val AUC lower bound",
    "roc_auc": "val AUC",
    "recall": "val recall",
    "specificity": "val specificity",
    "precision": "val precision",
    "accuracy": "val accuracy",
    "pr_auc": "val PR AUC",
    "tier": "val tier",
}


def worse_than_chance(m: dict[str, Any]) -> bool:
    """True if the model's whole test ROC AUC interval lies below 0.5: it ranks positives below negatives."""
    shown = (m.get("figures") or {}).get("roc_auc") or {}
    return m.get("succeeded", False) and shown.get("high") is not None and shown["high"] < 0.5


def few_positives(m: dict[str, Any] | None, split: str, minimum: int) -> int | None:
    """The positives of `split` when fewer than `minimum` (a tier needs that many of each class), else None."""
    counts = ((m or {}).get("split_counts") or {}).get(split)
    if counts is None:
        return None
    return counts["positive"] if counts["positive"] < minimum else None


def failed_gates(c: dict[str, Any], mine: list[dict[str, Any]]) -> str:
    """The gates the condition's candidate failed, each with figure and threshold, and what would change them:
    "val AUC lower bound 0.41 < 0.70 (only 3 positive val images: more positive cases would change it, ...)"."""
    rows = [g for g in c.get("gates") or [] if not g.get("passed")]
    if not rows:
        return ""
    profile = (c.get("candidate") or {}).get("profile")
    m = next((x for x in mine if x["profile"] == profile), None)
    minimum = int(((m or {}).get("quality") or {}).get("min_per_class") or MIN_PER_CLASS)
    parts = []
    for g in rows:
        label = GATE_WORDS.get(g["gate"], f"val {g['gate']}")
        if g["gate"] == "tier":
            parts.append(f"{label} {g['value'] or 'n/a'} < {g['minimum']}")
        else:
            value = "n/a" if g["value"] is None else f"{g['value']:.2f}"
            parts.append(f"{label} {value} < {g['minimum']:.2f}")
    few = few_positives(m, "val", minimum)
    interval_gates = {"roc_auc_low", "tier"} & {g["gate"] for g in rows}
    if few is not None and interval_gates:
        fix = (
            f"only {few} positive val images, a tier needs {minimum} of each class: more positive cases "
            "(data, or a larger split.val_fraction) would change it, not more training"
        )
    elif interval_gates:
        fix = "a better-separating model, or more val patients to narrow the interval, would change it"
    else:
        fix = "a better-separating model would change it"
    return f"{', '.join(parts)} ({fix})"


def _champion_words(champion: dict[str, Any], c: dict[str, Any], run_id: str) -> str:
    if not champion:
        return "none yet"
    if c["decision"] == "promoted" and champion.get("run_id") == run_id:
        return f"{champion['profile']}, new tonight"
    since = str(champion.get("promoted") or "")[:10]
    return f"{champion['profile']}, since {since}" if since else f"{champion['profile']} of `{champion['run_id']}`"


def _auc_words(champion: dict[str, Any]) -> str:
    if not champion or champion.get("roc_auc") is None:
        return "—"
    low_high = champion.get("roc_auc_interval")
    return _with_interval(
        {"value": champion["roc_auc"], **({"low": low_high[0], "high": low_high[1]} if low_high else {})}
    )


def _since_words(best: dict[str, Any] | None, mine: list[dict[str, Any]]) -> str:
    if best is None:
        return "— (no model succeeded)"
    previous = best.get("previous")
    if not previous or previous.get("delta_roc_auc") is None:
        return "first run"
    change = f"{previous['delta_roc_auc']:+.3f} ({best['profile']})"
    return change if previous.get("same_test_split") else f"{change}, other test split"


def _best_auc(run: RunLayout, condition: str) -> float | None:
    """The best test ROC AUC of `condition` among the models that succeeded in `run`."""
    from medcore.nights.registry import figure, succeeded

    try:
        jobs = read_json(run.run_json)["jobs"]
    except (OSError, ValueError, KeyError):
        return None
    values = [
        figure(read_json(paths.metrics_json), "roc_auc")
        for paths in (run.model(condition, job["profile"]) for job in jobs if job.get("condition") == condition)
        if succeeded(paths)
    ]
    return max((v for v in values if v is not None), default=None)


def _trend_words(history: list[float | None], steady: float = 0.005) -> str:
    """Direction of the least-squares line through the runs' best AUCs (oldest first, gaps skipped)."""
    points = [(i, v) for i, v in enumerate(history) if v is not None]
    if len(points) < 3:
        return f"too few runs ({len(points)})"
    mean_x, mean_y = sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    word = "rising" if slope > steady else "falling" if slope < -steady else "steady"
    return f"{TREND[word]} over {len(points)} runs"


def anchor(heading: str) -> str:
    """The fragment id GitHub gives a Markdown heading (lower case, punctuation dropped, spaces to hyphens), which
    the HTML rendering gives its headings too, so the contents' links work in both."""
    import re

    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def with_contents(markdown: str) -> str:
    """The report with its "## Contents" section filled from the headings that follow it: one line per section,
    the model sections of a section linked on its line."""
    import re

    lines = markdown.split("\n")
    try:
        at = lines.index("## Contents")
    except ValueError:
        return markdown
    entries: list[tuple[str, list[str]]] = []
    for line in lines[at + 1 :]:
        heading = re.match(r"^(##|###) (.+)$", line)
        if not heading:
            continue
        text = heading.group(2).strip()
        link = f"[{text.replace('`', '')}](#{anchor(text)})"
        if heading.group(1) == "##":
            entries.append((link, []))
        elif entries:
            entries[-1][1].append(link)
    toc = [f"- {link}" + (f": {', '.join(children)}" if children else "") for link, children in entries]
    return "\n".join(lines[: at + 1] + [""] + toc + lines[at + 1 :])
