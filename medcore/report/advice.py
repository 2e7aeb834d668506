"""The report's words: the run's verdict, the diagnosis of a failure, the next steps and what needs a person.

Pure: every rule here reads the view `medcore.report.view` built, never a file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from medcore.config import CHECKS, DEFAULT_FIX

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


def run_status(planned: int, succeeded: int, skipped: int) -> str:
    """The run's outcome in words, from how many models were planned, succeeded and skipped."""
    if succeeded == planned:
        return "all models succeeded"
    if skipped == planned:
        return "nothing changed since the champions"
    if succeeded + skipped == planned:
        return "every model succeeded or was skipped"
    return "no model succeeded" if not succeeded else "some models failed"


def issues(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation warnings and errors by (code, severity), then warnings from training, evaluation and Grad-CAM."""
    found: dict[tuple[str, str], list[str]] = {}
    for m in models:
        for f in (m["validation"] or {}).get("findings", []):
            if f["severity"] != "info":
                found.setdefault((f["code"], f["severity"]), []).append(f"{m['label']}: {f['message']}")
    return [{"code": c, "severity": s, "where": w} for (c, s), w in sorted(found.items())] + _more_issues(models)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def with_interval(shown: dict[str, Any]) -> str:
    """A figure with its bootstrap interval, "0.91 (0.87–0.94)"; without one, three digits as it is."""
    if shown.get("value") is None:
        return "n/a"
    if shown.get("low") is not None and shown.get("high") is not None:
        return f"{shown['value']:.2f} ({shown['low']:.2f}–{shown['high']:.2f})"
    return fmt(shown["value"])


def _more_issues(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warnings beyond validation: from training (if it records any), evaluation and Grad-CAM."""
    found: dict[tuple[str, str], list[str]] = {}
    for m in models:
        where = f"{m['condition']}/{m['profile']}"
        for text in (m["training"] or {}).get("warnings") or []:
            found.setdefault(("training_warning", "warning"), []).append(f"{where}: {text}")
        for text in (m["metrics"] or {}).get("warnings") or []:
            found.setdefault(("evaluation_warning", "warning"), []).append(f"{where}: {text}")
        undefined: dict[str, int] = ((m["metrics"] or {}).get("bootstrap") or {}).get("undefined_resamples") or {}
        if undefined:
            worst = max(undefined, key=undefined.__getitem__)
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


Say = Callable[..., None]  # say(sentence with a {who} slot, who): one line of advice, for one more model


def next_steps(context: dict[str, Any]) -> list[str]:
    """What to do after reading this report, most urgent first; advice that fits several models is given once,
    naming them all (ten models that all used every epoch make one step, not ten)."""
    from medcore.nights.decision import figure

    advice: dict[str, list[str]] = {}  # sentence with a {who} slot -> the models or conditions it is for

    def say(sentence: str, who: str = "") -> None:
        advice.setdefault(sentence, []).append(who)

    _run_steps(say, context)
    for m in context["models"]:
        if m["succeeded"]:
            _model_steps(say, m)
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


def _run_steps(say: Say, context: dict[str, Any]) -> None:
    """The steps for failed models and for each condition's champion decision."""
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


def _model_steps(say: Say, m: dict[str, Any]) -> None:
    """The steps for one model that succeeded: its tier, its epochs, its heatmaps, its probes, its change."""
    quality = m["metrics"].get("quality") or {}
    minimum = int(quality.get("min_per_class") or MIN_PER_CLASS)
    few = few_positives(m, "test", minimum)
    _tier_step(say, m, quality, few, minimum)
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


def _tier_step(say: Say, m: dict[str, Any], quality: dict[str, Any], few: int | None, minimum: int) -> None:
    """Worse than chance, or an insufficient tier and what would change it."""
    if worse_than_chance(m):
        say(
            f"{{who}}: worse than chance (test ROC AUC {with_interval(m['figures']['roc_auc'])}, the whole "
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
            needs.append(f"{m['profile']} is worse than chance (test AUC {with_interval(m['figures']['roc_auc'])})")
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
    return with_interval(
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


def _trend_words(history: list[float | None], steady: float = 0.005) -> str:
    """Direction of the least-squares line through the runs' best AUCs (oldest first, gaps skipped)."""
    points = [(i, v) for i, v in enumerate(history) if v is not None]
    if len(points) < 3:
        return f"too few runs ({len(points)})"
    mean_x, mean_y = sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    word = "rising" if slope > steady else "falling" if slope < -steady else "steady"
    return f"{TREND[word]} over {len(points)} runs"


def overview_row(c: dict[str, Any], mine: list[dict[str, Any]], run_id: str, history: list[float | None]) -> dict:
    """The first screen's line of one condition: `c` its champion decision, `mine` its models of this run,
    `history` the best test ROC AUC of each earlier run (oldest first) for the trend."""
    done = [m for m in mine if m["succeeded"] and m["roc_auc"] is not None]
    skipped = [m for m in mine if m["status"] == "skipped"]  # nothing changed since the champion
    best = max(done, key=lambda m: m["roc_auc"]) if done else None
    needs = _needs_a_person(c, mine, best)
    state = "failed" if any(m["failed"] for m in mine) or not (done or skipped) else "look" if needs else "ok"
    champion = c.get("champion") or {}
    return {
        "condition": c["condition"],
        "state": state,
        "status": STATUS[state],
        "champion": _champion_words(champion, c, run_id),
        "auc": _auc_words(champion),
        "since": _since_words(best, mine)
        if done or not skipped
        else str((skipped[0].get("nightly") or {}).get("reason") or "skipped").split(":")[0],
        "trend": _trend_words([*history, best["roc_auc"] if best else None]),
        "needs": "; ".join(needs) or "nothing",
    }
