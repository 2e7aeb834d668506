"""Nights that build on each other: the plan (retrain, continue, skip), changes since the champion, contamination."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from medcore import pipeline
from medcore.config import load_config
from medcore.errors import Skipped
from medcore.jsonio import read_json, write_json
from medcore.layout import RegistryLayout, RunLayout
from medcore.nights.nightly import (
    CONTINUE,
    RETRAIN,
    SKIP,
    code_version,
    contamination,
    continue_epochs,
    growth_share,
    plan_night,
    read_trained_on,
    split_changes,
    warm_epochs,
)
from tests.data.test_validation import _encode, phantom

TONIGHT = {"dataset_fingerprint": "d1", "config_digest": "c1", "code_version": "v1"}
CLEAN = {"images": 0, "by_split": {}, "examples": []}
DIRTY = {"images": 2, "by_split": {"test": 2}, "examples": ["test/a.png", "test/b.png"]}


def _champ(**changes) -> dict:
    return {
        "run_id": "r0",
        "profile": "standard",
        "promoted": "2026-11-20T01:00:00+00:00",
        "model_available": True,
        **TONIGHT,
        **changes,
    }


@pytest.mark.parametrize(
    ("policy", "champion", "contaminated", "skip", "mode", "words"),
    [
        ("auto", None, None, True, RETRAIN, "no champion yet"),
        ("continue", None, None, True, RETRAIN, "no champion yet"),
        ("auto", _champ(), CLEAN, True, SKIP, "unchanged since 2026-11-20"),
        ("retrain", _champ(), CLEAN, True, SKIP, "unchanged since"),
        ("auto", _champ(), CLEAN, False, CONTINUE, "continuing from champion r0/standard"),
        ("auto", _champ(dataset_fingerprint="d0"), CLEAN, True, CONTINUE, "with fewer epochs"),
        ("auto", _champ(config_digest="c0"), CLEAN, True, CONTINUE, "continuing"),
        ("continue", _champ(code_version="v0"), CLEAN, True, CONTINUE, "continuing"),
        ("retrain", _champ(dataset_fingerprint="d0"), CLEAN, True, RETRAIN, "policy retrain"),
        (
            "auto",
            _champ(dataset_fingerprint="d0"),
            DIRTY,
            True,
            RETRAIN,
            "was trained on 2 images now in val or test (2 in test; e.g. test/a.png, test/b.png): no warm start",
        ),
        ("auto", _champ(dataset_fingerprint="d0"), None, True, RETRAIN, "training images are not recorded"),
        (
            "auto",
            _champ(dataset_fingerprint="d0", model_available=False),
            CLEAN,
            True,
            RETRAIN,
            "model file is missing",
        ),
        ("auto", _champ(dataset_fingerprint=None), CLEAN, True, CONTINUE, "continuing"),
        ("auto", _champ(dataset_fingerprint="d0", warm_starts=2), CLEAN, True, CONTINUE, "continuing"),
        (
            "continue",
            _champ(dataset_fingerprint="d0", warm_starts=3),
            CLEAN,
            True,
            RETRAIN,
            "is the last of 3 warm starts in a row (nightly.max_warm_starts 3): training from scratch",
        ),
        ("auto", _champ(warm_starts=5), CLEAN, True, SKIP, "unchanged since"),  # skipping trains nothing at all
    ],
)
def test_plan_table(policy, champion, contaminated, skip, mode, words):
    """Every branch of the nightly plan: skip only when all three fingerprints match, never warm start when unsafe,
    and no more than `max_warm_starts` (3 here) warm starts in a row."""
    plan = plan_night(policy, champion, TONIGHT, contaminated, skip, max_warm_starts=3)
    assert plan["mode"] == mode and words in plan["reason"], plan
    assert plan["warm_start"] is (mode == CONTINUE)


def test_continue_epochs_are_a_share_rounded_up():
    assert [continue_epochs(e, 0.5) for e in (1, 2, 5, 8)] == [1, 1, 3, 4]
    assert continue_epochs(6, 0.01) == 1 and continue_epochs(6, 1.0) == 6


def _manifest(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"relpath": r, "label": label, "split": split, "sha256": hashlib.sha256(r.encode()).hexdigest()}
            for r, label, split in rows
        ]
    )


def test_warm_epochs_follow_the_growth_of_the_train_split_when_asked():
    """Half the train images new: half the epochs; a few new: the fixed share; unknown lineage: the fixed share."""
    assert growth_share({"a", "b"}, ["a", "b", "c", "d"]) == 0.5
    assert growth_share(None, ["a"]) is None and growth_share({"a"}, []) == 0.0
    assert warm_epochs(6, 0.16, 0.5, by_growth=True) == 3
    assert warm_epochs(6, 0.16, 0.05, by_growth=True) == 1
    assert warm_epochs(6, 0.16, 0.5, by_growth=False) == 1
    assert warm_epochs(6, 0.16, None, by_growth=True) == 1
    assert warm_epochs(6, 0.16, 1.0, by_growth=True) == 6


def test_changes_since_the_champion_are_counted_by_content():
    """Added, removed, relabelled and moved images, matched by SHA-256 (a renamed file is neither added nor removed)."""
    before = _manifest([("a", 0, "train"), ("b", 1, "train"), ("c", 0, "test"), ("d", 1, "val")])
    after = _manifest([("a", 0, "train"), ("b", 0, "train"), ("c", 0, "val"), ("e", 1, "test"), ("f", 0, "train")])
    renamed = after.copy()
    renamed.loc[0, "relpath"] = "a-renamed"
    changes = split_changes(before, renamed)
    assert (changes["added"], changes["removed"], changes["relabelled"], changes["moved"]) == (2, 1, 1, 1)
    assert changes["relabelled_examples"] == ["b"] and changes["moved_examples"] == ["c"]
    assert changes["added_by_split"] == {"test": 1, "train": 1} and changes["removed_examples"] == ["d"]
    assert split_changes(None, after) is None
    found = contamination({before.loc[0, "sha256"], after.loc[3, "sha256"]}, after)
    assert found == {"images": 1, "by_split": {"test": 1}, "examples": ["e"]}


def test_code_version_is_stable_and_short():
    assert code_version() == code_version() and len(code_version()) == 12


# --- through the pipeline's validate and train stages, on real files ------------------------------------


def _setup(tmp_path):
    import numpy as np

    root = tmp_path / "data" / "set"
    rng = np.random.default_rng(1)
    for i in range(60):
        label = "pos" if i % 2 else "neg"
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i}.png").write_bytes(_encode(phantom(rng, 32, finding=label == "pos")))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_root: {tmp_path / 'data'}\nruns_root: {tmp_path / 'runs'}\n"
        "conditions:\n  c: {dataset: set, layout: folders, positive: [pos], negative: [neg]}\n"
        "profiles:\n  p: {image_size: 32, epochs: 4}\n"
    )
    return config


def _night(config, tmp_path, run_id: str) -> tuple[dict, RunLayout]:
    jobs = pipeline.plan_run(str(config), run_id)
    pipeline.validate(jobs[0])
    run = RunLayout(tmp_path / "runs", run_id)
    return jobs[0], run


def _plant_champion(tmp_path, run: RunLayout, trained_on: set[str], fingerprint: str = "other") -> None:
    """A champion in the registry, as promote leaves it: model copy, split manifest copy, trained-on hashes."""
    registry = RegistryLayout(tmp_path / "registry")
    model = registry.model("c", "old", "p")
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"a model")
    split = registry.split("c", "old", "p")
    split.write_bytes(run.model("c", "p").split_csv.read_bytes())
    registry.trained_on("c", "old", "p").write_text("".join(f"{h}\n" for h in sorted(trained_on)))
    plan = read_json(run.model("c", "p").nightly_json)
    write_json(
        registry.record("c"),
        {
            "condition": "c",
            "history": [],
            "champion": {
                "run_id": "old",
                "profile": "p",
                "promoted": "2026-11-20T01:00:00+00:00",
                "model_path": str(model),
                "split_path": str(split),
                "trained_on_path": str(registry.trained_on("c", "old", "p")),
                "dataset_fingerprint": fingerprint,
                "config_digest": plan["config_digest"],
                "code_version": plan["code_version"],
            },
        },
    )


def test_planted_contamination_blocks_the_warm_start(tmp_path, monkeypatch):
    """A champion that trained on an image now in test is never warm-started from: the night retrains and says why."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    config = _setup(tmp_path)
    _, run = _night(config, tmp_path, "n1")
    paths = run.model("c", "p")
    assert read_json(paths.nightly_json)["mode"] == RETRAIN
    split = pd.read_csv(paths.split_csv)
    train = set(split.loc[split["split"] == "train", "sha256"])
    planted = split.loc[split["split"] == "test"].iloc[0]

    _plant_champion(tmp_path, run, train)
    _, run = _night(config, tmp_path, "n2")
    plan = read_json(run.model("c", "p").nightly_json)
    assert plan["mode"] == CONTINUE and plan["contamination"]["images"] == 0
    assert plan["changes"]["moved"] == plan["changes"]["added"] == 0

    _plant_champion(tmp_path, run, train | {planted["sha256"]})
    _, run = _night(config, tmp_path, "n3")
    plan = read_json(run.model("c", "p").nightly_json)
    assert plan["mode"] == RETRAIN and plan["contamination"]["examples"] == [planted["relpath"]]
    assert "1 images now in val or test (1 in test" in plan["reason"]


def test_unchanged_data_config_and_code_skip_the_night(tmp_path, monkeypatch):
    """Same data, config and code as the champion: validate plans `skip`, train raises Skipped, records no failure."""
    monkeypatch.delenv("MEDCORE_REGISTRY_ROOT", raising=False)
    config = _setup(tmp_path)
    _, run = _night(config, tmp_path, "n1")
    split = pd.read_csv(run.model("c", "p").split_csv)
    _plant_champion(
        tmp_path,
        run,
        set(split.loc[split["split"] == "train", "sha256"]),
        fingerprint=read_json(run.model("c", "p").validation_json)["fingerprint"],
    )
    job, run = _night(config, tmp_path, "n2")
    paths = run.model("c", "p")
    assert read_json(paths.nightly_json)["mode"] == SKIP
    with pytest.raises(Skipped, match="unchanged since 2026-11-20"):
        pipeline.train(job)
    assert not paths.failure_json.exists() and not paths.model.exists()
    assert pipeline.run_chain(job) is True, "a skipped chain is not a failed one"
    pipeline.promote("n2", str(tmp_path / "runs"))
    decision = read_json(run.promotion_json)["conditions"]["c"]
    assert decision["decision"] == "kept champion" and "unchanged since 2026-11-20" in decision["reason"]
    summary = pipeline.report("n2", str(tmp_path / "runs"))
    assert (summary["failed"], summary["skipped"]) == (0, 1)
    report = run.report_md.read_text()
    assert "**c: skip**" in report and "⏭ skipped: unchanged since 2026-11-20" in report
    assert "- Splits: val/test made by keyed hash of the group; positive share" in report


# --- two real nights: the set grows, the second night continues from the first night's champion -------------


def _copy_night(root: Path, to: Path) -> None:
    """A copy of the shared night's folder (data, runs, registry, configs) whose configs name the copy."""
    import shutil

    shutil.copytree(root, to, dirs_exist_ok=True)
    for name in ("tiny.yaml", "nights.yaml"):
        path = to / name
        path.write_text(path.read_text().replace(str(root), str(to)))


def _night_by_cli(root: Path, run_id: str, config: Path, env: dict[str, str]) -> RunLayout:
    """One night of knee osteoporosis (standard, 2 epochs) through `medcore run` in a child process."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "medcore.cli",
            "run",
            "--config",
            str(config),
            "--condition",
            "knee_osteoporosis",
            "--profile",
            "standard",
            "--epochs",
            "2",
            "--run-id",
            run_id,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return RunLayout(root / "runs", run_id)


@pytest.mark.slow
@pytest.mark.xdist_group("night_one")
def test_a_second_night_continues_from_the_champion_on_grown_data(tmp_path, night_one):
    """Night 1 trains from scratch on 80 % of the images and is promoted; night 2 sees all of them, moves no image
    between splits, warm-starts from the champion with half the epochs, re-scores the champion on the same images,
    and the report carries the changes and the trend plot.

    Night 1 is the session's shared run (`night_one` in conftest), copied here with its registry, so this test
    adds images and promotes without touching what other tests read."""
    import shutil

    _copy_night(night_one.root, tmp_path)
    data, held_back, config = tmp_path / "data", tmp_path / "later", tmp_path / "nights.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCORE_")}

    # Night 2 warm-starts by shrink and perturb (medcore.model.warmstart), with epochs by the train split's growth.
    shrunk = tmp_path / "shrink.yaml"
    shrunk.write_text(
        f"extends: {config}\nnightly: {{warm_start: shrink_perturb, shrink: 0.5, epochs_by_growth: true}}\n"
    )

    first = RunLayout(tmp_path / "runs", "night1")
    assert read_json(first.promotion_json)["conditions"]["knee_osteoporosis"]["decision"] == "promoted"
    for folder in held_back.iterdir():
        for image in folder.iterdir():
            shutil.move(image, data / "knee_osteoporosis" / folder.name / image.name)
    second = _night_by_cli(tmp_path, "night2", shrunk, env)

    paths = second.model("knee_osteoporosis", "standard")
    plan = read_json(paths.nightly_json)
    assert plan["mode"] == CONTINUE and plan["changes"]["added"] > 0
    assert plan["changes"]["moved"] == 0 and plan["changes"]["removed"] == plan["changes"]["relabelled"] == 0
    training = read_json(paths.training_json)
    assert training["epochs_planned"] == 1 and training["weights_used"].startswith("champion ")
    warm = training["warm_start"]
    new_train = pd.read_csv(paths.split_csv).query("split == 'train'")
    trained_before = read_trained_on(plan["champion"]["trained_on_path"])
    assert warm["growth"] == pytest.approx((~new_train["sha256"].isin(trained_before)).mean())
    assert 0 < warm["growth"] < 0.5, "a fifth of the images came back: a share under half, so one epoch of two"
    assert (warm["method"], warm["shrink"], warm["batch_norm"]) == ("shrink_perturb", 0.5, "reestimate")
    assert warm["batch_norm_batches"] > 0
    assert "shrink and perturb (weights × 0.5" in paths.model_card.read_text()
    loaded = load_config(config)
    warm_rate = loaded.profiles["standard"].learning_rate * loaded.nightly.continue_learning_rate
    assert training["learning_rate"] == pytest.approx(warm_rate), "a warm start trains at a share of the rate"
    trained_at = pd.read_csv(paths.history_csv)["learning_rate"]
    assert (trained_at <= warm_rate * 1.0001).all(), "the optimizer itself ran at the warm-start rate"
    versus = read_json(paths.metrics_json)["versus_champion"]
    assert (
        versus["champion"] == "night1/standard"
        and versus["selection"]["n"] == read_json(paths.metrics_json)["selection"]["n"]
    )
    before = pd.read_csv(first.model("knee_osteoporosis", "standard").split_csv).set_index("sha256")["split"]
    after = pd.read_csv(paths.split_csv).set_index("sha256")["split"]
    assert (after[before.index] == before).all(), "no image changed split as the set grew"
    registry = tmp_path / "registry"
    trend = pd.read_csv(registry / "knee_osteoporosis.trend.csv")
    assert list(trend["run_id"]) == ["night1", "night2"] and trend["mode"].tolist() == ["retrain", "continue"]
    from medcore.nights.registry import candidate_from

    assert candidate_from(paths, "night2")["warm_starts"] == 1  # the chain nightly.max_warm_starts bounds
    assert candidate_from(first.model("knee_osteoporosis", "standard"), "night1")["warm_starts"] == 0
    assert trend["champion_selection_auc"].notna().tolist() == [False, True]
    assert second.trend_png("knee_osteoporosis").stat().st_size > 0
    report = second.report_md.read_text()
    assert "**knee_osteoporosis: continue** (policy auto)" in report and "](trend/knee_osteoporosis.png)" in report
    nights = 1 if plan["changes"]["added_by_split"].get("test") else 2  # new test images make a new test split
    assert f"reported on {nights} night{'s' if nights > 1 else ''}" in report
    summary = read_json(second.summary_json)
    assert summary["nights"]["knee_osteoporosis"]["changes"]["moved"] == 0
