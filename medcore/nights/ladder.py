"""The night's arithmetic: predict each chain's minutes from a speed, pack the chains onto the pool, fit the ladder.

Pure: no files, no Airflow, no TensorFlow. Where the speed comes from (this machine's records or a probe) and
which chains tonight holds is medcore.nights.budget's part; the ladder itself is described there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "LADDER",
    "PROGRESSIVE_LEFT_OUT",
    "INFERENCE_SHARE",
    "CHAMPION_RESCORING",
    "Speed",
    "Chain",
    "predict_chain",
    "pack",
    "Cut",
    "NightPlan",
    "fit_night",
]

# The ladder's rungs, in the order they are tried; the words the plan and the report use for them.
LADDER = (
    ("order", "order the chains longest-first so the pool stays full"),
    ("epochs", "fewer epochs, early stopping on val"),
    ("progressive", "progressive resizing"),
    ("standard_only", "the standard profile only"),
    ("skip_condition", "skip a condition whose champion is still good"),
)
PROGRESSIVE_LEFT_OUT = (
    "progressive resizing is left out of the automatic ladder: it is built but not measured on the real sets"
)
# Inference (val, evaluation, Grad-CAM) costs about a third of a training step per image: forward only.
INFERENCE_SHARE = 1.0 / 3.0
# Evaluation re-scores the champion on val and test once there is one: 1.4-2.3x the evaluate stage of the same
# chain without one (nightly_following.json against nightly.json, Xeon with AMX, 2026-12-01).
CHAMPION_RESCORING = 2.0


@dataclasses.dataclass(frozen=True)
class Speed:
    """How fast this CPU kind runs a night's stages, with where the figures came from.

    `seconds_per_image_epoch[size]`: wall seconds one training image costs per epoch at that size, its share
    of the epoch's val pass included, measured in a night (two trainings sharing two cores).
    """

    cpu_id: str
    source: str
    seconds_per_image_epoch: Mapping[int, float]
    startup_seconds: float = 60.0  # to the first step: model build, dataset, graph trace
    validate_seconds: float = 10.0
    evaluate_seconds: float = 30.0  # fixed part: loading, bootstrap, plots
    gradcam_seconds: float = 40.0  # fixed part: overlays, contact sheet
    # Grad-CAM's work that does not grow with the test split (the deletion test's and the probes' passes), in
    # training image-epochs so that it scales with the CPU: 570-730 on the real AVX2 night of 2026-12-07 (family
    # 23; pneumonia, cardiomegaly, limb), where the stage took 154-172 s against 45-69 s from the rest of the
    # formula. Zero once the stage itself was measured on this machine (`gradcam_seconds` is then that median).
    gradcam_image_epochs: float = 600.0
    train_task_seconds: float = 20.0  # a train task beyond its training: start-up, split, record
    # (condition, profile, mode) -> {stage: seconds} of that chain's last measured run in that mode.
    measured: Mapping[tuple[str, str, str], Mapping[str, float]] = dataclasses.field(default_factory=dict)

    def per_image_epoch(self, size: int) -> float:
        """Seconds per training image-epoch at `size`: measured, else the nearest size scaled by pixels."""
        if size in self.seconds_per_image_epoch:
            return float(self.seconds_per_image_epoch[size])
        if not self.seconds_per_image_epoch:
            raise ValueError(f"{self.source}: no training speed measured at any image size")
        nearest = min(self.seconds_per_image_epoch, key=lambda s: abs(s - size))
        return float(self.seconds_per_image_epoch[nearest]) * (size / nearest) ** 2


@dataclasses.dataclass(frozen=True)
class Chain:
    """One (condition, profile) as tonight would train it, with the image counts its stages see."""

    condition: str
    profile: str
    image_size: int
    epochs: int
    train_images: int
    val_images: int = 0
    test_images: int = 0
    mode: str = "retrain"  # retrain | continue (a warm start: `epochs` are already the warm epochs)
    crossval_trainings: int = 0  # fold models trained before the shipped one (small test sets)
    cores: int = 1
    min_epochs: int = 1

    @property
    def key(self) -> tuple[str, str]:
        return (self.condition, self.profile)


def predict_chain(chain: Chain, speed: Speed, epochs: int | None = None) -> dict[str, float]:
    """Predicted minutes of each stage of `chain` (at `epochs`, default its own) and their `total`."""
    epochs = chain.epochs if epochs is None else epochs
    per = speed.per_image_epoch(chain.image_size)
    one_training = speed.startup_seconds + epochs * chain.train_images * per
    train = speed.train_task_seconds + one_training * (1 + chain.crossval_trainings)
    inference = (chain.val_images + chain.test_images) * per * INFERENCE_SHARE
    stages = {
        "validate": speed.validate_seconds,
        "train": train,
        "evaluate": speed.evaluate_seconds + inference,
        "gradcam": speed.gradcam_seconds
        + (chain.test_images * INFERENCE_SHARE * 0.5 + speed.gradcam_image_epochs) * per,
    }
    measured = speed.measured.get((*chain.key, chain.mode))
    rescored = chain.mode == "continue" and not chain.crossval_trainings  # evaluate re-scores the champion
    if measured is None and rescored and (*chain.key, "retrain") in speed.measured:
        retrain = speed.measured[(*chain.key, "retrain")]
        measured = {**retrain, "evaluate": retrain.get("evaluate", 0.0) * CHAMPION_RESCORING}
    for stage in ("validate", "evaluate", "gradcam"):  # this chain's own last timing beats the formula
        timed = (measured or {}).get(stage)
        if timed:
            stages[stage] = float(timed)
    if rescored and not measured:
        stages["evaluate"] *= CHAMPION_RESCORING
    minutes = {stage: seconds / 60.0 for stage, seconds in stages.items()}
    minutes["total"] = sum(minutes.values())
    return minutes


def pack(items: Sequence[tuple[Any, Mapping[str, float], int]], slots: int) -> tuple[float, list[dict[str, Any]]]:
    """Longest-first list scheduling of chains onto `slots` pool slots: (key, stage minutes, slots wanted).

    Only training holds pool slots (the DAG's `training` pool): validation runs before it, evaluation and
    Grad-CAM after it beside the next chain's training. Returns the night's minutes (the last chain's end)
    and each chain's pool start and end in the order they start: the order the jobs are handed to the pool.
    """
    free = [0.0] * max(1, slots)
    placed = []
    for key, stages, wanted in sorted(items, key=lambda d: -d[1]["total"]):
        wanted = max(1, min(wanted, len(free)))
        free.sort()
        start = max(free[wanted - 1], stages.get("validate", 0.0))  # the moment `wanted` slots are free
        end = start + stages.get("train", stages["total"])
        for i in range(wanted):
            free[i] = end
        tail = stages["total"] - stages.get("train", stages["total"]) - stages.get("validate", 0.0)
        placed.append({"key": key, "start": start, "end": end + tail})
    return max((p["end"] for p in placed), default=0.0), sorted(placed, key=lambda p: p["start"])


@dataclasses.dataclass(frozen=True)
class Cut:
    """One step down the ladder: which rung, for what, why, and what it costs where that is known."""

    rung: str
    condition: str
    profile: str | None
    what: str
    why: str
    cost: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class NightPlan:
    """The fitted night: chains in pool order with predicted minutes, what was cut and why."""

    budget_minutes: float
    slots: int
    speed: Speed
    chains: list[dict[str, Any]]
    cuts: list[Cut]
    predicted_minutes: float
    full_plan_minutes: float
    notes: list[str]

    @property
    def fits(self) -> bool:
        return self.predicted_minutes <= self.budget_minutes

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_minutes": self.budget_minutes,
            "slots": self.slots,
            "predicted_minutes": round(self.predicted_minutes, 1),
            "full_plan_minutes": round(self.full_plan_minutes, 1),
            "fits": self.fits,
            "cpu_id": self.speed.cpu_id,
            "speed_source": self.speed.source,
            "seconds_per_image_epoch": {str(k): v for k, v in sorted(self.speed.seconds_per_image_epoch.items())},
            "chains": self.chains,
            "cuts": [c.to_dict() for c in self.cuts],
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """The plan as the `plan` task logs it: one line for the night, one per chain, one per cut."""
        head = (
            f"night plan: {self.predicted_minutes:.0f} min predicted for a {self.budget_minutes:.0f}-min budget "
            f"on {self.slots} slot(s), CPU {self.speed.cpu_id} (speed from {self.speed.source}); "
            f"the full plan was {self.full_plan_minutes:.0f} min"
            + ("" if self.fits else "; IT DOES NOT FIT even after every rung of the ladder")
        )
        out = [head]
        for c in self.chains:
            out.append(
                f"  {c['condition']}/{c['profile']}: {c['predicted_minutes']['total']:.1f} min "
                f"({c['epochs']} epochs at {c['image_size']} px, starts at {c['start_minute']:.0f} min)"
            )
        out += [f"  cut ({c.rung}) {c.condition}/{c.profile or '*'}: {c.what}; {c.why}" for c in self.cuts]
        out += [f"  note: {n}" for n in self.notes]
        return out


def fit_night(
    chains: Sequence[Chain],
    speed: Speed,
    budget_minutes: float,
    slots: int,
    good_champions: Mapping[str, str] | None = None,
    keep_profile: str = "standard",
    epoch_cost: Callable[[Chain, int], str | None] | None = None,
) -> NightPlan:
    """Fit `chains` into `budget_minutes` on `slots` pool slots by the ladder (medcore.nights.budget's docstring).

    `good_champions`: condition -> why its champion is still good (only these may be skipped at rung 5).
    `epoch_cost(chain, epochs)`: what training `chain` for `epochs` costs, from an earlier history, or None.
    """
    ladder = _Ladder(chains, speed, budget_minutes, slots)
    if ladder.full > budget_minutes:
        ladder.cut_epochs()
        if ladder.over_budget():
            ladder.notes.append(PROGRESSIVE_LEFT_OUT)
        if ladder.over_budget():  # rung 4: the standard profile only, the dearest condition first
            ladder.standard_only(keep_profile)
        if ladder.over_budget():  # rung 5: skip a condition whose champion is still good
            ladder.skip_good_champions(dict(good_champions or {}))
        if ladder.over_budget():  # the last resort: rung 2 again, past its floor, down to one epoch
            ladder.cut_epochs(lambda c: 1)
        ladder.give_back()  # one epoch at a time from the longest chain can overshoot: return what the budget allows
        if any(ladder.epochs[k] < c.min_epochs for k, c in ladder.active.items()):
            ladder.notes.append(
                "the ladder's rungs were not enough: epochs were cut below night.min_epoch_share, the last resort"
            )
        ladder.record_epoch_cuts(epoch_cost)
    final, planned = ladder.planned()
    return NightPlan(budget_minutes, slots, speed, planned, ladder.cuts, final, ladder.full, ladder.notes)


class _Ladder:
    """`fit_night`'s state on the way down the ladder: the epochs of each chain, the chains still in, the cuts."""

    def __init__(self, chains: Sequence[Chain], speed: Speed, budget_minutes: float, slots: int) -> None:
        self.chains, self.speed, self.budget, self.slots = chains, speed, budget_minutes, slots
        self.epochs = {c.key: c.epochs for c in chains}
        self.active = {c.key: c for c in chains}
        self.cuts: list[Cut] = []
        self.notes: list[str] = []
        self.full = self.night()
        self.over = f"the full plan is predicted at {self.full:.0f} min, over the {budget_minutes:.0f}-min budget"

    def night(self) -> float:
        """The night's predicted minutes with the chains and epochs as they stand."""
        items = [(k, predict_chain(c, self.speed, self.epochs[k]), c.cores) for k, c in self.active.items()]
        return pack(items, self.slots)[0]

    def over_budget(self) -> bool:
        return self.night() > self.budget

    def cut_epochs(self, floor: Callable[[Chain], int] = lambda c: max(1, c.min_epochs)) -> None:
        """Rung 2: one epoch at a time from the longest chain, down to `floor`, until the night fits."""
        while self.night() > self.budget:
            candidates = [c for k, c in self.active.items() if self.epochs[k] > floor(c)]
            if not candidates:
                return
            longest = max(candidates, key=lambda c: predict_chain(c, self.speed, self.epochs[c.key])["total"])
            self.epochs[longest.key] -= 1

    def give_back(self) -> None:
        """Return epochs cut at rung 2 while the night still fits, the chain cut hardest (by share) first."""
        for c in sorted(self.active.values(), key=lambda c: self.epochs[c.key] / c.epochs):
            while self.epochs[c.key] < c.epochs:
                self.epochs[c.key] += 1
                if self.night() > self.budget:
                    self.epochs[c.key] -= 1
                    break

    def condition_minutes(self, condition: str, profiles: Callable[[str], bool]) -> float:
        return sum(
            predict_chain(c, self.speed, self.epochs[k])["total"]
            for k, c in self.active.items()
            if c.condition == condition and profiles(c.profile)
        )

    def standard_only(self, keep_profile: str) -> None:
        """Rung 4: drop a condition's other profiles, the dearest condition first, until the night fits."""
        conditions = {c.condition for c in self.active.values()}
        for condition in sorted(conditions, key=lambda n: -self.condition_minutes(n, lambda p: p != keep_profile)):
            others = [k for k, c in self.active.items() if c.condition == condition and c.profile != keep_profile]
            if not others or not any(c.condition == condition and c.profile == keep_profile for c in self.chains):
                continue  # a condition without the standard profile keeps what it has
            for k in others:
                dropped = self.active.pop(k)
                why = f"{self.over}, and fewer epochs alone did not fit it"
                self.cuts.append(
                    Cut("standard_only", condition, dropped.profile, f"not trained tonight (only {keep_profile})", why)
                )
            self.give_back()
            if self.night() <= self.budget:
                break

    def skip_good_champions(self, good_champions: Mapping[str, str]) -> None:
        """Rung 5: skip a condition whose champion is still good, the dearest first, until the night fits."""
        for condition in sorted(good_champions, key=lambda n: -self.condition_minutes(n, lambda p: True)):
            keys = [k for k, c in self.active.items() if c.condition == condition]
            if not keys:
                continue
            for k in keys:
                self.active.pop(k)
            why = (
                f"{self.over} even with fewer epochs and the standard profile only; "
                f"its champion is still good ({good_champions[condition]})"
            )
            self.cuts.append(Cut("skip_condition", condition, None, "not trained tonight: its champion stays", why))
            self.give_back()
            if self.night() <= self.budget:
                break

    def record_epoch_cuts(self, epoch_cost: Callable[[Chain, int], str | None] | None) -> None:
        """The epoch cuts that remain, one line per chain, ahead of the other cuts."""
        for c in self.chains:
            if c.key in self.active and self.epochs[c.key] < c.epochs:
                epochs = self.epochs[c.key]
                cost = epoch_cost(c, epochs) if epoch_cost else None
                below = " (below the floor of the ladder: the last resort)" if epochs < c.min_epochs else ""
                what = f"{epochs} epoch{'s' if epochs != 1 else ''} instead of {c.epochs}{below}"
                why = f"{self.over}; early stopping on val still keeps the best epoch"
                self.cuts.insert(0, Cut("epochs", c.condition, c.profile, what, why, cost))

    def planned(self) -> tuple[float, list[dict[str, Any]]]:
        """The night's minutes and its chains in pool order, each with its epochs and predicted minutes."""
        items = [(k, predict_chain(c, self.speed, self.epochs[k]), c.cores) for k, c in self.active.items()]
        final, placed = pack(items, self.slots)
        planned = []
        for p in placed:
            c = self.active[p["key"]]
            minutes = predict_chain(c, self.speed, self.epochs[c.key])
            planned.append(
                {
                    "condition": c.condition,
                    "profile": c.profile,
                    "mode": c.mode,
                    "image_size": c.image_size,
                    "epochs": self.epochs[c.key],
                    "epochs_asked": c.epochs,
                    "train_images": c.train_images,
                    "predicted_minutes": {k: round(v, 2) for k, v in minutes.items()},
                    "start_minute": round(p["start"], 1),
                }
            )
        return final, planned
