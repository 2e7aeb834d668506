"""Nights that build on each other: what changed since the champion, how tonight starts, and the trend.

Every night the validate stage compares tonight's split with the champion's (by SHA-256), checks
that the champion never trained on an image now in val or test, and plans the night in
`nightly.json`: `retrain` from scratch, `continue` from the champion with fewer epochs, or `skip`
when the data, the condition's config and the code all equal the champion's. `plan_night` makes
that choice and reads nothing, so every branch is a table-driven test.

The trend (one row per night and condition: champion and challenger ROC AUC with intervals, on
the selection and the locked test split) lives beside the registry as `<condition>.trend.csv`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "RETRAIN",
    "CONTINUE",
    "SKIP",
    "code_version",
    "config_digest",
    "split_changes",
    "contamination",
    "nights_view",
    "plan_night",
    "continue_epochs",
    "growth_share",
    "warm_epochs",
    "read_split",
    "read_trained_on",
    "TREND_COLUMNS",
    "render_trend",
]

RETRAIN, CONTINUE, SKIP = "retrain", "continue", "skip"
EXAMPLES = 5


def code_version() -> str:
    """A short hash of medcore's own source files: a night whose code changed is never skipped."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def config_digest(config: Any, condition: str) -> str:
    """A short hash of everything in the config that shapes `condition`'s models and their figures."""
    from medcore.jsonio import to_jsonable

    def plain(value: Any) -> Any:
        if hasattr(value, "model_dump"):  # pydantic
            return value.model_dump(mode="json")
        import dataclasses

        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value

    shaping = {
        "condition": plain(config.conditions[condition]),
        "profiles": {name: plain(p) for name, p in config.profiles.items()},
        "seed": config.seed,
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
        "evaluation": plain(config.evaluation),
        "validation": plain(config.validation_for(config.conditions[condition])),
    }
    text = json.dumps(to_jsonable(shaping), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_split(path: Path | str | None) -> pd.DataFrame | None:
    """A saved split manifest (relpath, label, split, sha256), or None if there is none."""
    if not path or not Path(path).is_file():
        return None
    return pd.read_csv(path, dtype={"relpath": str, "split": str, "sha256": str, "group": str, "raw_label": str})


def read_trained_on(path: Path | str | None) -> set[str] | None:
    """The SHA-256 of every image a champion (or any model it was warm-started from) trained on."""
    if not path or not Path(path).is_file():
        return None
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}


def _by_hash(split: pd.DataFrame) -> pd.DataFrame:
    return split.drop_duplicates("sha256").set_index("sha256")[["relpath", "label", "split"]]


def _examples(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["relpath"].astype(str))[:EXAMPLES]


def split_changes(before: pd.DataFrame | None, after: pd.DataFrame) -> dict[str, Any] | None:
    """Images added, removed, relabelled and moved to another split since `before`, by SHA-256; None without it."""
    if before is None:
        return None
    old, new = _by_hash(before), _by_hash(after)
    common = old.index.intersection(new.index)
    relabelled = new.loc[common][
        old.loc[common, "label"].astype(int).to_numpy() != new.loc[common, "label"].astype(int).to_numpy()
    ]
    moved = new.loc[common][old.loc[common, "split"].to_numpy() != new.loc[common, "split"].to_numpy()]
    added, removed = new.loc[new.index.difference(old.index)], old.loc[old.index.difference(new.index)]
    result = {"before": int(len(old)), "after": int(len(new))}
    for name, rows in (("added", added), ("removed", removed), ("relabelled", relabelled), ("moved", moved)):
        result[name] = int(len(rows))
        result[f"{name}_examples"] = _examples(rows)
    result["added_by_split"] = {s: int(n) for s, n in added["split"].value_counts().sort_index().items()}
    return result


def contamination(trained_on: Iterable[str] | None, split: pd.DataFrame) -> dict[str, Any] | None:
    """Tonight's val and test images the champion (or its warm-start ancestors) trained on; None if unknown."""
    if trained_on is None:
        return None
    trained = set(trained_on)
    held = split[split["split"].isin(["val", "test"]) & split["sha256"].isin(trained)]
    return {
        "images": int(len(held)),
        "by_split": {s: int(n) for s, n in held["split"].value_counts().sort_index().items()},
        "examples": _examples(held),
    }


def continue_epochs(epochs: int, share: float) -> int:
    """Epochs of a warm start: `share` of the planned epochs, rounded up, at least one."""
    return max(1, math.ceil(epochs * share - 1e-9))


def growth_share(champion_images: Iterable[str] | None, tonight_images: Iterable[str]) -> float | None:
    """Share of tonight's train images the champion never trained on (None where its images are unknown)."""
    if champion_images is None:
        return None
    tonight = set(tonight_images)
    if not tonight:
        return 0.0
    return len(tonight - set(champion_images)) / len(tonight)


def warm_epochs(epochs: int, share: float, growth: float | None, by_growth: bool) -> int:
    """Epochs of a warm start: `share` of the profile's `epochs`, or the share of new train images if larger.

    A night whose train split is half new images is half a new training problem, so it gets half the epochs;
    one with a few new images keeps the fixed share (`continue_epochs`).
    """
    return continue_epochs(epochs, max(share, growth or 0.0) if by_growth else share)


def plan_night(
    policy: str,
    champion: Mapping[str, Any] | None,
    tonight: Mapping[str, Any],
    contaminated: Mapping[str, Any] | None,
    skip_unchanged: bool = True,
    max_warm_starts: int = 0,
) -> dict[str, Any]:
    """How tonight trains one condition: `retrain`, `continue` or `skip`, with a one-sentence reason.

    `champion`: the registry's champion (run_id, profile, promoted, dataset_fingerprint, config_digest,
    code_version, model_available, warm_starts: how many warm starts in a row made it); `tonight`: the
    same three fingerprints for tonight; `contaminated`: what `contamination` found (None: the champion's
    training images are unknown). Pure: every branch is a row of a table-driven test.
    """
    if not champion:
        return {"mode": RETRAIN, "warm_start": False, "reason": "no champion yet: training from scratch"}
    name = f"{champion.get('run_id')}/{champion.get('profile')}"
    since = str(champion.get("promoted") or "?")[:10]
    same = [
        key
        for key in ("dataset_fingerprint", "config_digest", "code_version")
        if champion.get(key) is not None and champion.get(key) == tonight.get(key)
    ]
    if skip_unchanged and len(same) == 3:
        return {
            "mode": SKIP,
            "warm_start": False,
            "since": champion.get("promoted"),
            "reason": f"unchanged since {since}: data, condition config and code equal champion {name}'s; "
            "nothing is trained tonight",
        }
    if policy == RETRAIN:
        return {"mode": RETRAIN, "warm_start": False, "reason": "policy retrain: training from scratch"}
    chain = int(champion.get("warm_starts") or 0)
    if max_warm_starts and chain >= max_warm_starts:
        # Warm-started models can generalise worse than ones trained from scratch on the same data (Ash &
        # Adams 2020); bench/notes.md (issue 15) measured it on pneumonia's shifted test split.
        return {
            "mode": RETRAIN,
            "warm_start": False,
            "reason": f"champion {name} is the last of {chain} warm starts in a row (nightly.max_warm_starts "
            f"{max_warm_starts}): training from scratch",
        }
    if not champion.get("model_available"):
        return {
            "mode": RETRAIN,
            "warm_start": False,
            "reason": f"champion {name}'s model file is missing: training from scratch",
        }
    if contaminated is None:
        return {
            "mode": RETRAIN,
            "warm_start": False,
            "reason": f"champion {name}'s training images are not recorded, so it cannot be shown that it never "
            "saw tonight's val or test images: no warm start, training from scratch",
        }
    if contaminated["images"]:
        where = ", ".join(f"{n} in {s}" for s, n in contaminated["by_split"].items())
        return {
            "mode": RETRAIN,
            "warm_start": False,
            "contaminated": True,
            "reason": f"champion {name} was trained on {contaminated['images']} images now in val or test "
            f"({where}; e.g. {', '.join(contaminated['examples'][:2])}): no warm start, "
            "training from scratch",
        }
    return {
        "mode": CONTINUE,
        "warm_start": True,
        "reason": f"continuing from champion {name} (promoted {since}) with fewer epochs",
    }


# --------------------------------------------------------------------------- trend

TREND_COLUMNS = [
    "night",
    "run_id",
    "decision",
    "policy",
    "mode",
    "candidate",
    "selection_split",
    "test_split",
    "challenger_selection_auc",
    "challenger_selection_low",
    "challenger_selection_high",
    "champion_selection_auc",
    "champion_selection_low",
    "champion_selection_high",
    "paired_selection_low",
    "paired_selection_high",
    "best_selection_auc",
    "challenger_test_auc",
    "challenger_test_low",
    "challenger_test_high",
    "champion_test_auc",
    "champion_test_low",
    "champion_test_high",
    "test_nights",
]


def render_trend(rows: pd.DataFrame, title: str) -> bytes:
    """Champion and challenger ROC AUC with intervals across nights: selection split (decides) and test (reports)."""
    from matplotlib.figure import Figure

    from medcore.evaluation import png_bytes

    fig = Figure(figsize=(8, 3.4))
    nights = pd.to_datetime(rows["night"], utc=True, errors="coerce")
    x = list(range(len(rows)))
    labels = [n.strftime("%m-%d") if not pd.isna(n) else "?" for n in nights]
    for i, (split, heading) in enumerate(
        (("selection", "selection split (decides)"), ("test", "locked test (reports)"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for who, colour, offset in (("champion", "tab:blue", -0.08), ("challenger", "tab:orange", 0.08)):
            auc = pd.to_numeric(rows[f"{who}_{split}_auc"], errors="coerce")
            low = pd.to_numeric(rows[f"{who}_{split}_low"], errors="coerce")
            high = pd.to_numeric(rows[f"{who}_{split}_high"], errors="coerce")
            shown = auc.notna()
            if not shown.any():
                continue
            xs = [v + offset for v, s in zip(x, shown) if s]
            err = [(auc - low.fillna(auc))[shown].clip(lower=0), (high.fillna(auc) - auc)[shown].clip(lower=0)]
            ax.errorbar(
                xs,
                auc[shown],
                yerr=err,
                fmt="o-" if who == "champion" else "s",
                color=colour,
                capsize=3,
                markersize=4,
                label=who,
            )
        if split == "selection" and "best_selection_auc" in rows:
            best = pd.to_numeric(rows["best_selection_auc"], errors="coerce")
            if best.notna().any():
                ax.step(x, best, where="mid", color="grey", ls=":", label="best on current data")
        promoted = [v for v, d in zip(x, rows["decision"]) if d == "promoted"]
        for v in promoted:
            ax.axvline(v, color="tab:green", alpha=0.15, lw=6)
        # One or two nights: centred, with room either side, rather than a point on the frame's edge.
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_xticks(x, labels, rotation=45 if len(x) > 6 else 0, fontsize=9)
        ax.tick_params(axis="y", labelsize=9)
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, 1.01))  # an AUC lies in 0-1: no axis above 1 round a perfect score
        ax.set(title=heading, ylabel="ROC AUC" if i == 0 else None)
        ax.grid(alpha=0.3)
        if i == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{title}: ROC AUC by night (green: promoted)", fontsize=10)
    fig.subplots_adjust(top=0.84, wspace=0.25)
    return png_bytes(fig)


def trend_csv(rows: list[dict[str, Any]]) -> str:
    """The trend rows as CSV text, columns in TREND_COLUMNS order."""
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=TREND_COLUMNS).to_csv(buffer, index=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the report's view


def _registry_for_run(info: Mapping[str, Any]):
    from medcore.config import load_config
    from medcore.errors import MedcoreError
    from medcore.registry import registry_of

    try:
        return registry_of(load_config(info["config"]))
    except (MedcoreError, OSError, ValueError, KeyError):
        return None  # the report must render even if the config moved since the run


def _trend_line(rows: pd.DataFrame) -> str | None:
    """One line for the first screen: the champion's figure across the nights recorded."""
    if rows.empty:
        return None
    champion = pd.to_numeric(rows["champion_selection_auc"], errors="coerce")
    promoted = int((rows["decision"] == "promoted").sum())
    shown = champion.dropna()
    span = (
        f"champion selection ROC AUC {shown.iloc[0]:.3f} → {shown.iloc[-1]:.3f}"
        if len(shown) > 1
        else f"champion selection ROC AUC {shown.iloc[-1]:.3f}"
        if len(shown)
        else "no champion re-scored yet"
    )
    return f"{len(rows)} night(s) recorded, {promoted} promotion(s); {span}"


def nights_view(
    run: Any, info: Mapping[str, Any], models: list[dict[str, Any]], decisions: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per condition: tonight's plan, changes since the champion, the paired comparison, test nights, the trend.

    Also draws each condition's trend plot into the run folder (`trend/<condition>.png`), so the
    report, the e-mail and the Training reports page all show the same picture.
    """
    from medcore.jsonio import atomic_write_bytes
    from medcore.validation import balance_text

    registry = _registry_for_run(info)
    views = []
    for condition in dict.fromkeys(m["condition"] for m in models):
        ours = [m for m in models if m["condition"] == condition]
        plan = next((m["nightly"] for m in ours if m.get("nightly")), None) or {}
        decision = decisions.get(condition) or {}
        versus = decision.get("versus_champion") or {}
        test_split = decision.get("test_split") or {}
        rows = pd.DataFrame(columns=TREND_COLUMNS)
        if registry is not None and registry.trend(condition).is_file():
            try:
                rows = pd.read_csv(registry.trend(condition))
            except (OSError, ValueError, pd.errors.ParserError):
                pass
        plot = None
        if len(rows):
            plot = atomic_write_bytes(run.trend_png(condition), render_trend(rows.tail(60), condition))
        changes = plan.get("changes")
        balance = next(((m["validation"] or {}).get("split_balance") for m in ours if m.get("validation")), None)
        views.append(
            {
                "condition": condition,
                "mode": plan.get("mode"),
                "policy": plan.get("policy"),
                "reason": plan.get("reason"),
                "changes": changes,
                "contamination": plan.get("contamination"),
                "champion": plan.get("champion"),
                "selection": versus.get("selection"),
                "test": versus.get("test"),
                "margin": decision.get("margin"),
                "best": decision.get("best_selection_auc"),
                "gap_to_best_low": decision.get("gap_to_best_low"),
                "test_nights": test_split.get("nights"),
                "test_since": test_split.get("since"),
                "trend_plot": plot.relative_to(run.root).as_posix() if plot else None,
                "trend_line": _trend_line(rows),
                "balance": balance_text(balance) if balance and balance.get("splits_made") else None,
                "summary": {
                    "mode": plan.get("mode"),
                    "reason": plan.get("reason"),
                    "changes": {k: changes[k] for k in ("added", "removed", "relabelled", "moved")}
                    if changes
                    else None,
                    "contaminated_images": (plan.get("contamination") or {}).get("images"),
                    "decision": decision.get("decision"),
                    "test_split_nights": test_split.get("nights"),
                },
            }
        )
    return views
