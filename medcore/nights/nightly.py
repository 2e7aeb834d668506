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
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medcore.nights.trend import TREND_COLUMNS, render_trend

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
]

RETRAIN, CONTINUE, SKIP = "retrain", "continue", "skip"
EXAMPLES = 5


def code_version() -> str:
    """A short hash of medcore's own source files: a night whose code changed is never skipped."""
    root = Path(__file__).resolve().parents[1]  # medcore/, every sub-package
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

        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value

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
    result: dict[str, Any] = {"before": int(len(old)), "after": int(len(new))}
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
    refused = _no_warm_start(champion, name, contaminated, max_warm_starts)
    if refused is not None:
        return refused
    return {
        "mode": CONTINUE,
        "warm_start": True,
        "reason": f"continuing from champion {name} (promoted {since}) with fewer epochs",
    }


def _no_warm_start(
    champion: Mapping[str, Any], name: str, contaminated: Mapping[str, Any] | None, max_warm_starts: int
) -> dict[str, Any] | None:
    """The retrain plan, with its reason, when the champion may not start tonight's model; None when it may."""
    chain = int(champion.get("warm_starts") or 0)
    if max_warm_starts and chain >= max_warm_starts:
        # Warm-started models can generalise worse than ones trained from scratch on the same data (Ash &
        # Adams 2020); docs/decisions/0009-warm-start-continue.md (issue 15) measured it on pneumonia's
        # shifted test split.
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
    return None


# --------------------------------------------------------------------------- the report's view


def _registry_for_run(info: Mapping[str, Any]):
    from medcore.config import load_config
    from medcore.errors import MedcoreError
    from medcore.nights.registry import registry_of

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


def _trend_rows(registry: Any, condition: str) -> pd.DataFrame:
    """The condition's trend rows from the registry; none where there is no registry or no readable trend."""
    rows = pd.DataFrame(columns=TREND_COLUMNS)
    if registry is not None and registry.trend(condition).is_file():
        try:
            rows = pd.read_csv(registry.trend(condition))
        except (OSError, ValueError, pd.errors.ParserError):
            pass
    return rows


def nights_view(
    run: Any, info: Mapping[str, Any], models: list[dict[str, Any]], decisions: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per condition: tonight's plan, changes since the champion, the paired comparison, test nights, the trend.

    Also draws each condition's trend plot into the run folder (`trend/<condition>.png`), so the
    report, the e-mail and the Training reports page all show the same picture.
    """
    from medcore.data.validation import balance_text
    from medcore.jsonio import atomic_write_bytes

    registry = _registry_for_run(info)
    views = []
    for condition in dict.fromkeys(m["condition"] for m in models):
        ours = [m for m in models if m["condition"] == condition]
        plan = next((m["nightly"] for m in ours if m.get("nightly")), None) or {}
        decision = decisions.get(condition) or {}
        versus = decision.get("versus_champion") or {}
        test_split = decision.get("test_split") or {}
        rows = _trend_rows(registry, condition)
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
