"""The validate stage: check the dataset, save the split, and plan tonight's training of the condition."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcore.config import Config
from medcore.errors import DataError
from medcore.jsonio import atomic_write_text, write_json
from medcore.layout import ModelLayout
from medcore.pipeline.stage import Job, stage

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["validate", "plan_condition"]


@stage("validate")
def validate(job: Job, config, condition, profile, paths: ModelLayout) -> Job:
    """Check the dataset, write validation.json, the summary and the split manifest; fail if untrainable."""
    from medcore.data.validation import validate_condition

    result = validate_condition(config, condition, profile)
    write_json(paths.validation_json, result.to_dict())
    atomic_write_text(paths.validation_summary, result.summary())
    if not result.ok:
        # A split from an earlier, passing validation must not outlive this verdict: train would use it.
        paths.split_csv.unlink(missing_ok=True)
        raise DataError(f"{condition.name}: {result.reason}")
    assert result.manifest is not None  # a validation that passed always carries its manifest
    atomic_write_text(paths.split_csv, result.manifest.to_csv(index=False))
    write_json(paths.nightly_json, plan_condition(config, condition.name, result.manifest, result.fingerprint))
    return job


def plan_condition(config: Config, condition: str, split: pd.DataFrame, fingerprint: str) -> dict[str, Any]:
    """Tonight's plan for `condition`: what changed since the champion, whether it may be warm-started, the mode."""
    from medcore.nights.nightly import (
        code_version,
        config_digest,
        contamination,
        plan_night,
        read_split,
        read_trained_on,
        split_changes,
    )
    from medcore.nights.registry import read_record, registry_of

    champion = read_record(registry_of(config), condition).get("champion")
    policy = config.conditions[condition].nightly_policy or config.nightly.policy
    tonight = {
        "dataset_fingerprint": fingerprint,
        "config_digest": config_digest(config, condition),
        "code_version": code_version(),
    }
    changes = contaminated = None
    if champion:
        changes = split_changes(read_split(champion.get("split_path")), split)
        contaminated = contamination(read_trained_on(champion.get("trained_on_path")), split)
        champion = {
            **champion,
            "model_available": bool(champion.get("model_path")) and Path(champion["model_path"]).is_file(),
        }
    plan = plan_night(
        policy, champion, tonight, contaminated, config.nightly.skip_unchanged, config.nightly.max_warm_starts
    )
    return {
        **plan,
        "policy": policy,
        **tonight,
        "changes": changes,
        "contamination": contaminated,
        "champion": {
            k: champion.get(k)
            for k in ("run_id", "profile", "promoted", "model_path", "trained_on_path", "model_sha256", "warm_starts")
        }
        if champion
        else None,
    }
