"""The model contract: `model.json` beside every saved model, written and read only here.

It says what the model expects and promises, so nobody downstream re-derives it: input size,
channels and range, where preprocessing happens, what the output means, the Grad-CAM layer, seed,
precision and library versions (written by training); the decision threshold, how it was chosen,
and the test figures behind it (added by evaluation). `medcore predict` and anyone scoring new
images apply the threshold it holds. Every write is atomic: a reader sees the old contract or the new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcore.config import Profile
from medcore.errors import MedcoreError
from medcore.jsonio import read_json, write_json

__all__ = ["write_training_contract", "record_evaluation", "contract_threshold", "CONTRACT_NAME"]

CONTRACT_NAME = "model.json"  # beside model.keras (medcore.layout's ModelLayout.model_contract)
DEFAULT_THRESHOLD = 0.5


def write_training_contract(path: Path, profile: Profile, *, seed: int, precision: str, gradcam_layer: str,
                            versions: dict[str, str]) -> Path:
    """Write the contract of a freshly trained model (replacing any earlier one: the model is new)."""
    return write_json(path, {
        "architecture": "DenseNet121", "input_shape": [profile.image_size, profile.image_size, 3],
        "input_range": [0, 255], "preprocessing": "inside the model (rescale, ImageNet normalisation)",
        "output": "one logit; sigmoid gives P(positive)", "gradcam_layer": gradcam_layer,
        "classes": {"0": "negative", "1": "positive"}, "seed": seed, "precision": precision,
        "versions": versions,
    })


def record_evaluation(path: Path, metrics: dict[str, Any], metrics_file: Path) -> Path:
    """Add the val-chosen threshold and the test figures behind it to the contract at `path`."""
    contract = read_json(path) if path.exists() else {}
    contract.update({
        "threshold": metrics["threshold"],
        "threshold_rule": metrics["threshold_rule"],
        "threshold_split": metrics["threshold_split"],
        "target_sensitivity": metrics["threshold_choice"]["target_sensitivity"],
        "test_metrics": {"n": metrics["n"], "roc_auc": metrics["roc_auc"],
                         "roc_auc_interval": metrics["intervals"].get("roc_auc"),
                         "confidence": metrics["bootstrap"]["confidence"],
                         "quality_tier": metrics["quality"]["tier"], "metrics_file": metrics_file},
    })
    return write_json(path, contract)


def contract_threshold(model_path: str | Path) -> tuple[float, str]:
    """The decision threshold from the contract beside a model, and where it came from (0.5 if none)."""
    contract = Path(model_path).with_name(CONTRACT_NAME)
    if not contract.is_file():
        return DEFAULT_THRESHOLD, f"no {contract.name} beside the model; using threshold {DEFAULT_THRESHOLD}"
    try:
        threshold = read_json(contract).get("threshold")
    except ValueError as exc:
        raise MedcoreError(f"{contract}: not valid JSON: {exc}") from None
    if threshold is None:
        return DEFAULT_THRESHOLD, (f"{contract} has no threshold (the model was not evaluated); using threshold "
                                   f"{DEFAULT_THRESHOLD}")
    return float(threshold), f"threshold {float(threshold):.4f} from {contract}"
