"""Where every artefact lives. Nothing else in medcore builds an artefact path by hand."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from medcore.errors import RunIdError

__all__ = ["RunLayout", "ModelLayout", "RegistryLayout", "safe_run_id", "is_run_folder_name"]


_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HASHED = re.compile(r".*-h[0-9a-f]{12}")  # what safe_run_id appends to an id it had to change
MAX_RUN_ID_CHARS = 200  # the folder name must fit in 255 bytes with room for the hash


def safe_run_id(run_id: str) -> str:
    """Return `run_id` as a folder name, one folder per id: no two ids ever share a folder.

    An id made only of letters, digits, '.', '_' and '-' is its own folder name. Any other (Airflow's
    hold ':' and '+', which some tools mishandle; `a/b` would be a path) is cleaned and given a hash of
    the original, so `a/b` and `a_b` stay apart; a safe id that happens to end like such a hash is
    hashed too, so the two kinds of names never meet. Raises RunIdError for ids with nothing usable.
    """
    if not isinstance(run_id, str) or not run_id or len(run_id) > MAX_RUN_ID_CHARS or "\x00" in run_id:
        raise RunIdError(f"run id {str(run_id)[:60]!r}: must be 1 to {MAX_RUN_ID_CHARS} characters, no NUL")
    if _SAFE.fullmatch(run_id) and not _HASHED.fullmatch(run_id):
        return run_id
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._-")
    if not any(c.isalnum() for c in run_id):  # '..', '/', '...': nothing to name a folder by
        raise RunIdError(f"run id {run_id!r} has no letters or digits to name a folder with")
    cleaned = cleaned or "run"  # e.g. an id in another script: the hash alone tells it apart
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned}-h{digest}"


def is_run_folder_name(name: str) -> bool:
    """True if `name` is a folder name safe_run_id can produce (and so no path trick such as '..' or 'a/b')."""
    return bool(_SAFE.fullmatch(name)) and len(name) <= MAX_RUN_ID_CHARS + 14


@dataclass(frozen=True)
class ModelLayout:
    """Artefacts of one (condition, profile) chain inside a run."""

    root: Path
    condition: str
    profile: str

    @property
    def validation_json(self) -> Path:
        return self.root / "validation.json"

    @property
    def validation_summary(self) -> Path:
        return self.root / "validation.txt"

    @property
    def split_csv(self) -> Path:
        return self.root / "split.csv"

    @property
    def model(self) -> Path:
        return self.root / "model.keras"

    @property
    def model_contract(self) -> Path:
        return self.root / "model.json"

    @property
    def model_card(self) -> Path:
        """What the model is for and not for, its data, figures and caveats (medcore.assess.model_card)."""
        return self.root / "model_card.md"

    @property
    def backup_dir(self) -> Path:
        return self.root / "backup"

    @property
    def history_csv(self) -> Path:
        return self.root / "history.csv"

    @property
    def training_json(self) -> Path:
        return self.root / "training.json"

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def predictions_csv(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def crossval_dir(self) -> Path:
        """One folder per (repeat, fold) model of a small set's cross-validation."""
        return self.root / "crossval"

    @property
    def crossval_csv(self) -> Path:
        """Every held-out and inner-val logit of the cross-validation's fold models."""
        return self.root / "crossval.csv"

    @property
    def val_predictions_csv(self) -> Path:
        """This model's scores on the selection (val) images, for the paired comparison with the champion."""
        return self.root / "val_predictions.csv"

    @property
    def champion_predictions_csv(self) -> Path:
        """The champion re-scored tonight on this chain's val and test images (inference only)."""
        return self.root / "champion_predictions.csv"

    @property
    def timings_json(self) -> Path:
        """Start and seconds of each stage's last successful attempt: the chain's actual minutes."""
        return self.root / "timings.json"

    @property
    def nightly_json(self) -> Path:
        """How tonight trains: retrain, continue or skip, why, and what changed since the champion."""
        return self.root / "nightly.json"

    @property
    def gradcam_dir(self) -> Path:
        return self.root / "gradcam"

    @property
    def gradcam_json(self) -> Path:
        return self.root / "gradcam.json"

    @property
    def failure_json(self) -> Path:
        return self.root / "failure.json"

    def gradcam_overlay(self, kind: str, rank: int) -> Path:
        return self.gradcam_dir / f"{kind}_{rank:02d}.png"

    @property
    def gradcam_contact_sheet(self) -> Path:
        return self.gradcam_dir / "contact_sheet.png"

    @property
    def gradcam_deletion_png(self) -> Path:
        return self.gradcam_dir / "deletion_curve.png"

    @property
    def gradcam_probes_png(self) -> Path:
        """The shortcut probes and the randomisation check in one figure (medcore.assess.probes)."""
        return self.gradcam_dir / "probes.png"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    def plot(self, name: str) -> Path:
        """One evaluation plot: `roc`, `pr`, `calibration` or `confusion`."""
        return self.plots_dir / f"{name}.png"


@dataclass(frozen=True)
class RunLayout:
    """Artefacts of one run: `<runs_root>/<run id>/`."""

    runs_root: Path
    run_id: str

    @property
    def root(self) -> Path:
        return Path(self.runs_root) / safe_run_id(self.run_id)

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def promotion_json(self) -> Path:
        """The champion decision per condition, written by the promote stage before the report."""
        return self.root / "promotion.json"

    @property
    def plan_json(self) -> Path:
        """The night plan (medcore.nights.budget): predicted minutes per chain, the budget, what was cut and why."""
        return self.root / "plan.json"

    @property
    def notify_json(self) -> Path:
        """What happened to the report e-mail: sent, skipped or failed (with the error)."""
        return self.root / "notify.json"

    def model(self, condition: str, profile: str) -> ModelLayout:
        return ModelLayout(self.root / condition / profile, condition, profile)

    def trend_png(self, condition: str) -> Path:
        """The condition's champion and challenger ROC AUC across nights, drawn for this run's report."""
        return self.root / "trend" / f"{condition}.png"


@dataclass(frozen=True)
class RegistryLayout:
    """The champion registry: `<root>/<condition>.json` and the champions' model copies.

    Models are copied in (never linked) so deleting old runs can never break a champion.
    """

    root: Path

    def record(self, condition: str) -> Path:
        return Path(self.root) / f"{condition}.json"

    def lock(self, condition: str) -> Path:
        return Path(self.root) / f".{condition}.lock"

    def models_dir(self, condition: str) -> Path:
        return Path(self.root) / condition

    def model(self, condition: str, run_id: str, profile: str) -> Path:
        return self.models_dir(condition) / f"{safe_run_id(run_id)}__{profile}.keras"

    def contract(self, condition: str, run_id: str, profile: str) -> Path:
        return self.models_dir(condition) / f"{safe_run_id(run_id)}__{profile}.json"

    def split(self, condition: str, run_id: str, profile: str) -> Path:
        """The champion's split manifest: what changed since it, by SHA-256, is measured against this."""
        return self.models_dir(condition) / f"{safe_run_id(run_id)}__{profile}.split.csv"

    def trained_on(self, condition: str, run_id: str, profile: str) -> Path:
        """SHA-256 of every image the champion, or a champion it was warm-started from, trained on."""
        return self.models_dir(condition) / f"{safe_run_id(run_id)}__{profile}.trained_on.txt"

    def trend(self, condition: str) -> Path:
        """One row per night: champion and challenger ROC AUC with intervals, on selection and test."""
        return Path(self.root) / f"{condition}.trend.csv"

    def card(self, condition: str, run_id: str, profile: str) -> Path:
        """The champion's model card, copied with it."""
        return self.models_dir(condition) / f"{safe_run_id(run_id)}__{profile}.md"

    @property
    def shared_backbone(self) -> Path:
        """The backbone `medcore pretrain` learnt from every condition's train split (`weights: shared`)."""
        return Path(self.root) / "shared_backbone.keras"

    @property
    def shared_backbone_record(self) -> Path:
        """What the shared backbone was trained on, how long it took, and its per-condition val AUC."""
        return Path(self.root) / "shared_backbone.json"

    @property
    def shared_backbone_work(self) -> Path:
        """Pre-training's resumable state (BackupAndRestore, best epoch, history); removed once it succeeds."""
        return Path(self.root) / ".shared_backbone"
