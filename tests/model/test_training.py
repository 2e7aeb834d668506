"""Training faults: a killed run resumes where it stopped; a failed run leaves the old model alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from medcore import pipeline
from medcore.config import load_config
from medcore.jsonio import read_json
from medcore.layout import RunLayout
from medcore.model.training import class_weights
from tests.fakes import kill_after_first_epoch

TRAIN_JOB = "import json, sys; from medcore import pipeline; pipeline.train(json.loads(sys.argv[1]))"


def _job(config_path, run_id: str, epochs: int | None = None) -> dict:
    config = load_config(config_path)
    return {
        "run_id": run_id,
        "runs_root": str(config.runs_root),
        "config": str(config.path),
        "condition": "knee_osteoporosis",
        "profile": "standard",
        "epochs": epochs,
    }


def test_class_weights_balance_the_classes():
    """Weights are inversely proportional to class frequency and average to one per example."""
    weights = class_weights(pd.Series([1, 1, 1, 0]).to_numpy())
    assert weights[0] == pytest.approx(2.0) and weights[1] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_killed_training_resumes_from_the_last_finished_epoch(tiny_config):
    """SIGKILL after epoch 1; the rerun starts at epoch 2, finishes all 3, and keeps one history."""
    job = _job(tiny_config, "kill-test", epochs=3)
    pipeline.validate(job)
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    metadata = paths.backup_dir / "fine_tune" / "training_metadata.json"

    kill_after_first_epoch(TRAIN_JOB, [json.dumps(job)], metadata)
    assert not paths.model.exists(), "a killed run must not leave a model behind"

    rerun = subprocess.run(
        [sys.executable, "-c", TRAIN_JOB, json.dumps(job)], capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = read_json(paths.training_json)
    assert record["resumed_from_epoch"] >= 1
    assert record["epochs_run"] == 3
    history = pd.read_csv(paths.history_csv)
    assert history["epoch"].tolist() == [0, 1, 2]
    assert paths.model.exists() and not (paths.backup_dir / "fine_tune").exists()
    # The saved model is the epoch the record reports, the best of all three, whichever attempt ran it.
    assert record["best_val_auc"] == pytest.approx(history["val_auc"].max(), abs=1e-6)
    assert history["val_auc"][record["best_epoch"]] == pytest.approx(record["best_val_auc"], abs=1e-6)
    assert _saved_model_val_auc(job, paths) == pytest.approx(record["best_val_auc"], abs=1e-4)
    assert not (paths.backup_dir / "best.weights.h5").exists()


def _saved_model_val_auc(job: dict, paths) -> float:
    """Val AUC of the saved model.keras, measured exactly as training measured it each epoch."""
    import keras

    from medcore.data.datasets import make_dataset

    config = load_config(job["config"])
    profile = config.profiles[job["profile"]]
    split = pd.read_csv(paths.split_csv)
    model = keras.models.load_model(paths.model, compile=False)
    auc = keras.metrics.AUC(from_logits=True)
    for images, labels in make_dataset(split[split["split"] == "val"], profile, training=False, seed=config.seed):
        auc.update_state(labels, model(images, training=False))
    return float(auc.result())


def test_best_epoch_is_kept_across_attempts_and_restored(tmp_path):
    """The keeper saves the best epoch's weights, keeps them for a resumed attempt, and restores them."""
    import keras
    import numpy as np

    from medcore.model.callbacks import best_epoch_callback, restore_best_epoch

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    weights, record = tmp_path / "best.weights.h5", tmp_path / "best.json"

    def epoch(keeper, index: int, value: float, fill: float) -> None:
        model.set_weights([np.full_like(w, fill) for w in model.get_weights()])
        keeper.on_epoch_end(index, {"val_auc": value})

    keeper = best_epoch_callback(weights, record, finished=0)
    keeper.set_model(model)
    epoch(keeper, 0, 0.6, 1.0)
    epoch(keeper, 1, 0.9, 2.0)  # the best
    epoch(keeper, 2, 0.7, 3.0)  # the last, worse
    # A second attempt resumed after 3 finished epochs keeps epoch 1 and is not fooled by a worse epoch 3.
    resumed = best_epoch_callback(weights, record, finished=3)
    resumed.set_model(model)
    epoch(resumed, 3, 0.8, 4.0)
    epoch(resumed, 4, float("nan"), 5.0)  # undefined AUC selects nothing
    assert restore_best_epoch(model, resumed) == {"epoch": 1, "val_auc": pytest.approx(0.9)}
    assert all(np.all(w == 2.0) for w in model.get_weights())
    # A record of an epoch the backup does not hold (killed before BackupAndRestore) is dropped.
    assert best_epoch_callback(weights, record, finished=1).best is None
    assert not weights.exists() and not record.exists()


def test_failed_training_leaves_the_previous_model_untouched(tiny_config):
    """A training that crashes mid-way keeps the earlier model.keras byte for byte and records the failure."""
    job = _job(tiny_config, "fail-test", epochs=1)
    pipeline.validate(job)
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    paths.model.write_bytes(b"the previous, good model")
    split = pd.read_csv(paths.split_csv)
    split.loc[split["split"] == "train", "path"] = str(paths.root / "vanished.jpg")  # files deleted under us
    split.to_csv(paths.split_csv, index=False)

    with pytest.raises(Exception):  # noqa: B017 whichever layer fails (ours or TensorFlow's), the old model stays
        pipeline.train(job)
    assert paths.model.read_bytes() == b"the previous, good model"
    assert read_json(paths.failure_json)["stage"] == "train"
    assert not [p for p in paths.root.iterdir() if ".tmp" in p.name]


# --------------------------------------------------------------------------- weight sources


def test_imagenet_without_network_names_the_file_to_place(tmp_path, monkeypatch):
    """Offline, `weights: imagenet` fails with one line naming the file and where to put it."""
    import socket

    from medcore.config import Profile
    from medcore.errors import MedcoreError
    from medcore.model.training import IMAGENET_WEIGHTS_FILE, build_model

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("no network here")))
    with pytest.raises(MedcoreError) as caught:
        build_model(Profile("p", image_size=32, weights="imagenet"), seed=0)
    message = str(caught.value)
    assert IMAGENET_WEIGHTS_FILE in message and str(tmp_path / "keras" / "models") in message
    assert "\n" not in message


def test_local_weights_file_is_loaded(tmp_path):
    """A DenseNet121 (notop) weights file named in the profile ends up in the model."""
    import keras
    import numpy as np

    from medcore.config import Profile
    from medcore.model.training import build_model

    donor = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    kernel = donor.get_layer("conv1_conv")
    kernel.set_weights([np.full_like(w, 0.125) for w in kernel.get_weights()])
    path = tmp_path / "densenet_notop.weights.h5"
    donor.save_weights(path)
    model = build_model(Profile("p", image_size=32, weights=str(path)), seed=0)
    assert np.allclose(model.get_layer("conv1_conv").get_weights()[0], 0.125)


def test_champion_warm_start_copies_weights_across_image_sizes(tmp_path):
    """A champion trained at 32 px starts a 64 px model: every matching layer is copied."""
    import numpy as np

    from medcore.config import Profile
    from medcore.model.training import build_model, warm_start_from

    champion = build_model(Profile("p", image_size=32), seed=1)
    champion.save(tmp_path / "champion.keras")
    fresh = build_model(Profile("p", image_size=64), seed=2)
    assert not np.allclose(fresh.get_layer("logit").get_weights()[0], champion.get_layer("logit").get_weights()[0])
    copied = warm_start_from(fresh, tmp_path / "champion.keras")
    assert copied > 100
    for name in ("conv1_conv", "conv5_block16_2_conv", "logit"):
        for mine, theirs in zip(fresh.get_layer(name).get_weights(), champion.get_layer(name).get_weights()):
            assert np.array_equal(mine, theirs)


def test_cosine_schedule_decays_from_the_base_rate_to_its_floor():
    """First epoch of a phase at the base rate, last at 5 % of it, never rising in between."""
    from medcore.model.training import cosine_learning_rate

    rates = [cosine_learning_rate(1e-3, e, 2, 8) for e in range(2, 8)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(5e-5)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert cosine_learning_rate(1e-3, 0, 0, 1) == pytest.approx(1e-3)  # a one-epoch phase trains at the base rate


@pytest.mark.slow
def test_progressive_resizing_resumes_follows_one_cosine_and_saves_a_full_size_epoch(tiny_config, tmp_path):
    """Two epochs at 32 px, then one at 48 px, killed in the small phase: the rerun finishes on one cosine
    schedule, and the saved model is a full-size epoch whose val AUC is the one the record reports."""
    from medcore.model.training import cosine_learning_rate

    config = tmp_path / "progressive.yaml"
    config.write_text(
        f"extends: {tiny_config}\nprofiles:\n  standard: {{image_size: 48, epochs: 3, patience: 10, "
        "batch_size: 16, execution: eager, max_images_per_split: 40, learning_rate: 0.002, "
        "lr_schedule: cosine, progressive: {epochs: 2, image_size: 32}}\n"
    )
    job = _job(config, "progressive-test")
    pipeline.validate(job)
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    kill_after_first_epoch(TRAIN_JOB, [json.dumps(job)], paths.backup_dir / "small" / "training_metadata.json")
    rerun = subprocess.run(
        [sys.executable, "-c", TRAIN_JOB, json.dumps(job)], capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    record = read_json(paths.training_json)
    history = pd.read_csv(paths.history_csv)
    assert record["resumed_from_epoch"] == 1 and history["epoch"].tolist() == [0, 1, 2]
    assert record["progressive"] == {"image_size": 32, "epochs": 2}
    used = history["learning_rate"].tolist()
    assert used == pytest.approx([cosine_learning_rate(0.002, e, 0, 3) for e in range(3)], rel=1e-4)
    # Only the 48 px epoch may be kept, whatever the 32 px epochs scored on val.
    assert record["best_epoch"] == 2
    import keras

    assert tuple(keras.models.load_model(paths.model, compile=False).inputs[0].shape) == (None, 48, 48, 3)
    assert _saved_model_val_auc(job, paths) == pytest.approx(record["best_val_auc"], abs=1e-4)
    assert not list(paths.backup_dir.glob("*_phase.weights.h5"))


def _tiny_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inputs)))


def test_a_crash_between_model_and_contract_never_pairs_a_new_model_with_the_old_threshold(tmp_path, monkeypatch):
    """model.keras and model.json are fsynced before their renames and the contract names the model's hash, so a
    crash after the model's rename leaves no contract (evaluation refuses), not the old model's threshold."""
    import os

    from medcore.errors import MedcoreError
    from medcore.jsonio import write_json
    from medcore.model import contract
    from medcore.model.contract import contract_threshold, file_sha256, read_contract

    paths = RunLayout(tmp_path / "runs", "r").model("c", "p")
    paths.root.mkdir(parents=True)
    sha = contract.save_model_with_contract(_tiny_model(0), paths, {"architecture": "tiny"})
    assert read_json(paths.model_contract)["model_sha256"] == sha == file_sha256(paths.model)
    write_json(paths.model_contract, {**read_json(paths.model_contract), "threshold": 0.9})  # evaluated
    assert contract_threshold(paths.model)[0] == 0.9

    synced, replaced = set(), []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst):
        replaced.append((os.path.realpath(src) in synced, str(dst)))
        return real_replace(src, dst)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(contract, "write_json", crash)  # the machine dies right after the model's rename
    with pytest.raises(KeyboardInterrupt):
        contract.save_model_with_contract(_tiny_model(1), paths, {"architecture": "tiny"})
    assert replaced == [(True, str(paths.model))], "the new model was on disk before it was renamed into place"
    assert str(paths.root) in synced, "the folder was synced, so the rename itself survives"
    assert file_sha256(paths.model) != sha, "the new model is in place"
    threshold, source = contract_threshold(paths.model)
    assert threshold == 0.5 and "no model.json" in source, "the old model's 0.9 must not apply to the new model"

    monkeypatch.undo()
    write_json(paths.model_contract, {"model_sha256": sha, "threshold": 0.9})  # e.g. restored from a backup
    with pytest.raises(MedcoreError, match="describes another model"):
        read_contract(paths.model)


def test_training_json_records_the_precision_chosen_for_this_cpu_and_why(tiny_config, tmp_path):
    from medcore.model.compute import choose_float32_speed, choose_precision

    config = tmp_path / "auto.yaml"
    config.write_text(
        f"extends: {tiny_config}\nprofiles:\n  standard: {{image_size: 32, epochs: 1, batch_size: 16, "
        "execution: eager, max_images_per_split: 24, precision: auto, cores: 1}\n"
    )
    job = _job(config, "precision-test")
    pipeline.validate(job)
    pipeline.train(job)
    record = read_json(RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"]).training_json)
    expected = choose_precision("auto")
    assert record["compute"]["precision"]["mode"] == expected["mode"] == record["precision"]
    assert record["compute"]["precision"]["reason"] == expected["reason"] and record["compute"]["cores"] == 1
    assert record["compute"]["fused_batch_norm"] is True  # the profile default
    # The float32 speed choice for this CPU, with its reason, as medcore.model.compute makes it.
    assert record["compute"]["speed"] == choose_float32_speed(expected["mode"], True)
    # The process's CPU seconds beside the wall clock, per epoch and for the attempt.
    assert len(record["epoch_cpu_seconds"]) == len(record["epoch_seconds"]) == 1
    assert 0 < record["epoch_cpu_seconds"][0] <= record["cpu_seconds"]


def test_batch_norm_momentum_reaches_every_batch_norm_layer_and_the_saved_model(tmp_path):
    """The profile's momentum is what each of DenseNet121's batch norms averages with, also after a reload."""
    import keras

    from medcore.config import Profile
    from medcore.model.training import build_model

    model = build_model(Profile("p", image_size=32, batch_norm_momentum=0.9), seed=1)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 100 and {layer.momentum for layer in norms} == {0.9}
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert {layer.momentum for layer in loaded.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}


def test_the_night_plan_caps_epochs_and_its_deadline_stops_training_after_a_finished_epoch(tiny_config):
    """A job planned at 3 of its 4 epochs with a deadline already near: training stops after its first epoch, keeps
    that epoch's model, and training.json says so (and on which CPU id it ran, for the next night's plan)."""
    from medcore.nights.budget import cpu_id

    job = {**_job(tiny_config, "deadline-test", epochs=4), "planned_mode": "retrain", "planned_epochs": 3}
    job["train_deadline_minutes"] = 0.001
    pipeline.validate(job)
    pipeline.train(job)
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    record = read_json(paths.training_json)
    assert record["epochs_planned"] == 3 and record["planned_epochs"] == 3
    assert record["epochs_run"] == 1 and record["deadline_stopped"] is True
    assert paths.model.exists() and record["machine"]["cpu_id"] == cpu_id()
    assert set(read_json(paths.timings_json)) == {"validate", "train"}


def test_a_plan_made_for_another_mode_does_not_cap_the_epochs(tiny_config):
    """Planned as a warm start (1 epoch) but validation found no champion: the retrain keeps its own epochs."""
    job = {**_job(tiny_config, "mode-test", epochs=2), "planned_mode": "continue", "planned_epochs": 1}
    pipeline.validate(job)
    pipeline.train(job)
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    assert read_json(paths.training_json)["epochs_run"] == 2
