"""The model contract: `model.json` beside every saved model, written and read only here.

It says what the model expects and promises, so nobody downstream re-derives it: input size,
channels and range, where preprocessing happens, what the output means, the Grad-CAM layer, seed,
precision and library versions (written with the model by training); the decision threshold, how it
was chosen, and the test figures behind it (added by evaluation). `medcore predict` and anyone scoring
new images apply the threshold it holds.

A model and its contract cannot be renamed in one step, so the contract names the exact model file
it describes (`model_sha256`) and every reader checks it: a crash between the two renames, or files
copied by hand, must never pair a model with another model's threshold.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Literal

from medcore.config import Profile
from medcore.errors import MedcoreError
from medcore.jsonio import fsync_dir, fsync_file, read_json, write_json
from medcore.layout import ModelLayout

__all__ = [
    "training_contract",
    "save_model_with_contract",
    "read_contract",
    "record_evaluation",
    "contract_threshold",
    "contract_resize",
    "contract_temperature",
    "file_sha256",
    "CONTRACT_NAME",
    "DEFAULT_THRESHOLD",
]

CONTRACT_NAME = "model.json"  # beside model.keras (ModelLayout.model_contract)
DEFAULT_THRESHOLD = 0.5


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in blocks (models are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_contract(
    profile: Profile, *, seed: int, precision: str, gradcam_layer: str, versions: dict[str, str]
) -> dict[str, Any]:
    """What a freshly trained model expects and emits (the contract before evaluation adds its threshold)."""
    return {
        "architecture": "DenseNet121",
        "input_shape": [profile.image_size, profile.image_size, 3],
        "input_range": [0, 255],
        "preprocessing": "inside the model (rescale, ImageNet normalisation)",
        # How files become the square input; predict, evaluate and Grad-CAM read it from here.
        "resize": profile.resize,
        "output": "one logit; sigmoid(logit / temperature) gives P(positive)",
        "gradcam_layer": gradcam_layer,
        "classes": {"0": "negative", "1": "positive"},
        "seed": seed,
        "precision": precision,
        "versions": versions,
    }


def save_model_with_contract(model, paths: ModelLayout, contract: dict[str, Any]) -> str:
    """Put `model` at model.keras and `contract` (plus the model's SHA-256) at model.json; return the hash.

    The old contract goes first: a crash part-way leaves a model with no contract, which evaluation
    refuses, never a new model beside the old model's threshold. Every file is fsynced before its
    rename, and the folder after it.
    """
    tmp = paths.model.with_name(f".{paths.model.stem}.tmp.keras")
    model.save(tmp)
    fsync_file(tmp)
    sha = file_sha256(tmp)
    paths.model_contract.unlink(missing_ok=True)
    fsync_dir(paths.root)
    os.replace(tmp, paths.model)  # the good model is only ever replaced whole
    fsync_dir(paths.root)
    write_json(paths.model_contract, {**contract, "model_file": paths.model.name, "model_sha256": sha})
    return sha


def read_contract(model_path: str | Path, contract_path: str | Path | None = None) -> dict | None:
    """The model contract (default: `model.json` beside the model), or None if there is none.

    Raises MedcoreError if the contract names another model file (its `model_sha256` differs).
    Contracts written before the hash existed are taken as they are.
    """
    contract_path = Path(contract_path) if contract_path else Path(model_path).with_name(CONTRACT_NAME)
    if not contract_path.is_file():
        return None
    try:
        contract = read_json(contract_path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MedcoreError(f"{contract_path}: not valid JSON: {' '.join(str(exc).split())[:120]}") from None
    if not isinstance(contract, dict):
        raise MedcoreError(f"{contract_path}: not a model contract (a JSON object)")
    expected = contract.get("model_sha256")
    if expected and expected != file_sha256(model_path):
        raise MedcoreError(
            f"{contract_path}: describes another model than {Path(model_path).name} (SHA-256 "
            f"differs); train again, or pass --threshold"
        )
    return contract


def record_evaluation(path: Path, contract: dict[str, Any], metrics: dict[str, Any], metrics_file: Path) -> Path:
    """Write `contract` (as `read_contract` returned it) with the val-chosen threshold, temperature and test figures.

    The threshold is the one for single images (what `medcore predict` decides): per-study figures
    keep theirs as `study_threshold`, and a cross-validated model gets its own, fitted on its val split.
    """
    images = metrics.get("image_level", metrics)
    shipped = metrics.get("shipped_model") or {}
    return write_json(
        path,
        {  # atomic: a reader sees the old contract or the new one
            **contract,
            "threshold": shipped.get("threshold", images["threshold"]),
            "threshold_rule": metrics["threshold_rule"],
            "threshold_split": shipped.get("threshold_split", images["threshold_split"]),
            "study_threshold": metrics["threshold"] if "image_level" in metrics else None,
            # Fitted on val: every probability shown to a person is sigmoid(logit / temperature), the threshold too.
            "temperature": shipped.get("temperature", metrics.get("temperature", 1.0)),
            "probability": "sigmoid(logit / temperature)",
            "estimate": metrics.get("estimate", "test split"),
            "target_sensitivity": metrics["threshold_choice"]["target_sensitivity"],
            "test_metrics": {
                "n": metrics["n"],
                "roc_auc": metrics["roc_auc"],
                "roc_auc_interval": metrics["intervals"].get("roc_auc"),
                "confidence": metrics["bootstrap"]["confidence"],
                "quality_tier": metrics["quality"]["tier"],
                "metrics_file": metrics_file,
            },
        },
    )


def contract_resize(model_path: str | Path) -> Literal["squash", "pad"]:
    """How the model's images were made square (`squash` or `pad`), from its contract (`squash` if none)."""
    contract = read_contract(model_path) or {}
    value = contract.get("resize", "squash")
    if value not in ("squash", "pad"):
        raise MedcoreError(
            f"{Path(model_path).with_name(CONTRACT_NAME)}: resize must be 'squash' or 'pad', got {value!r}"
        )
    return value


def contract_temperature(model_path: str | Path) -> float:
    """The calibration temperature from the model's contract (1.0: none fitted yet)."""
    value = (read_contract(model_path) or {}).get("temperature")
    if value is None:
        return 1.0
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)):
        raise MedcoreError(
            f"{Path(model_path).with_name(CONTRACT_NAME)}: temperature must be a positive number, got {value!r}"
        )
    return float(value)


def contract_threshold(model_path: str | Path) -> tuple[float, str]:
    """The decision threshold from the contract beside a model, and where it came from (0.5 if none)."""
    contract_file = Path(model_path).with_name(CONTRACT_NAME)
    contract = read_contract(model_path)
    if contract is None:
        return DEFAULT_THRESHOLD, f"no {contract_file.name} beside the model; using threshold {DEFAULT_THRESHOLD}"
    threshold = contract.get("threshold")
    if threshold is None:
        return DEFAULT_THRESHOLD, (
            f"{contract_file} has no threshold (the model was not evaluated); using threshold {DEFAULT_THRESHOLD}"
        )
    return float(threshold), f"threshold {float(threshold):.4f} from {contract_file}"
