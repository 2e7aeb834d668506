"""The shared backbone: what it may learn from (never a test image), its loss, and warm starts from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from medcore import pipeline
from medcore.config import load_config
from medcore.data.validation import validate_condition
from medcore.jsonio import read_json
from medcore.layout import RunLayout
from medcore.model.pretraining import masked_targets, pretraining_set, task_weights
from medcore.nights.registry import registry_of
from tests.fakes import kill_after_first_epoch


@pytest.fixture()
def own_data(tmp_path, demo_data) -> Path:
    """A private copy of the demo sets, for tests that plant files or remove a set."""
    return Path(shutil.copytree(demo_data, tmp_path / "data"))


def _config(tmp_path, tiny_config, data: Path, extra: str = "") -> Path:
    path = tmp_path / "pretrain.yaml"
    path.write_text(f"extends: {tiny_config}\ndata_root: {data}\nregistry: {{root: {tmp_path / 'registry'}}}\n{extra}")
    return path


def _test_image_of(config, condition: str) -> Path:
    manifest = validate_condition(config, config.conditions[condition]).manifest
    return Path(manifest.loc[manifest["split"] == "test", "path"].iloc[0])


def test_pretraining_never_reads_a_test_image_of_any_condition(tmp_path, tiny_config, own_data):
    """An exact and a re-encoded, brightened copy of a pneumonia test image, planted in knee OA's
    train folder, are both left out and counted; nothing from any test split is read."""
    config = load_config(_config(tmp_path, tiny_config, own_data))
    source = _test_image_of(config, "pneumonia")
    shutil.copy(source, own_data / "knee_oa" / "train" / "0" / "9999999L.jpg")
    brighter = np.clip(cv2.imread(str(source)).astype(int) + 4, 0, 255).astype(np.uint8)
    cv2.imwrite(str(own_data / "knee_oa" / "train" / "1" / "9999999R.jpg"), brighter, [cv2.IMWRITE_JPEG_QUALITY, 80])

    data = pretraining_set(config, config.profiles["standard"])

    assert data.test_lookalikes["knee_osteoarthritis"] == 2
    assert sum(data.test_lookalikes.values()) == 2
    read = set(data.rows["path"])
    assert not any(p.startswith(str(own_data / "knee_oa" / "train")) and "9999999" in p for p in read)
    for name, condition in config.conditions.items():
        manifest = validate_condition(config, condition, config.profiles["standard"]).manifest
        assert not read & set(manifest.loc[manifest["split"] == "test", "path"]), name
    assert set(data.rows["split"]) == {"train", "val"}
    assert data.tasks == list(config.conditions)


def test_a_condition_without_usable_data_is_skipped_and_named(tmp_path, tiny_config, own_data):
    shutil.rmtree(own_data / "limb")
    config = load_config(_config(tmp_path, tiny_config, own_data))
    data = pretraining_set(config, config.profiles["standard"])
    assert "limb_abnormalities" not in data.tasks and len(data.tasks) == 4
    assert "limb" in data.skipped["limb_abnormalities"]
    assert sorted(data.rows["task"].unique()) == [0, 1, 2, 3]


def test_targets_mark_only_the_images_own_task():
    rows = pd.DataFrame({"task": [0, 2, 1], "label": [1, 0, 1]})
    assert masked_targets(rows, 3).tolist() == [[1, -1, -1], [-1, -1, 0], [-1, 1, -1]]


def test_task_weights_give_every_task_and_class_an_equal_share():
    """A 6:2 task beside a 1:1 task: each of the four (task, class) cells carries a quarter of the weight."""
    rows = pd.DataFrame({"task": [0] * 8 + [1] * 2, "label": [1] * 6 + [0] * 2 + [1, 0], "path": list("abcdefghij")})
    weights = task_weights(rows)
    cells = pd.Series(weights).groupby([rows["task"], rows["label"]]).sum()
    assert np.allclose(cells.to_numpy(), len(rows) / 4)
    assert weights.mean() == pytest.approx(1.0)


def test_task_weights_by_size_keep_the_tasks_in_proportion():
    """The same 8 + 2 images by size: the tasks keep 8/10 and 2/10 of the weight, split evenly by class."""
    rows = pd.DataFrame({"task": [0] * 8 + [1] * 2, "label": [1] * 6 + [0] * 2 + [1, 0], "path": list("abcdefghij")})
    weights = task_weights(rows, "by_size")
    cells = pd.Series(weights).groupby([rows["task"], rows["label"]]).sum()
    assert np.allclose(cells.to_numpy(), [4.0, 4.0, 1.0, 1.0])
    assert weights.mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal, by_size"):
        task_weights(rows, "random")


def test_masked_loss_is_the_own_tasks_cross_entropy_whatever_the_other_logits():
    import keras

    from medcore.model.pretraining import _masked_loss

    y_true = np.array([[1.0, -1.0, -1.0], [-1.0, 0.0, -1.0]], dtype=np.float32)
    a = np.array([[2.0, 5.0, -7.0], [0.3, -1.0, 9.0]], dtype=np.float32)
    b = np.array([[2.0, -3.0, 1.0], [-8.0, -1.0, 0.0]], dtype=np.float32)
    expected = [np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))]  # -log sigmoid(2), -log(1 - sigmoid(-1))
    assert np.allclose(keras.ops.convert_to_numpy(_masked_loss(y_true, a)), expected, atol=1e-5)
    assert np.allclose(keras.ops.convert_to_numpy(_masked_loss(y_true, b)), expected, atol=1e-5)


@pytest.mark.slow
def test_pretrained_backbone_starts_a_profile_with_weights_shared(tmp_path, tiny_config, own_data):
    """Real pre-training on two tiny sets, then a run whose profile starts from it: every layer but the
    head comes from the backbone, and before it exists the same profile trains from scratch and says so."""
    import keras

    from medcore.model.pretraining import pretrain_backbone

    path = _config(
        tmp_path, tiny_config, own_data, "profiles:\n  standard: {weights: shared, freeze_epochs: 1, epochs: 2}\n"
    )
    config = load_config(path)
    job = {
        "run_id": "before",
        "runs_root": str(config.runs_root),
        "config": str(config.path),
        "condition": "knee_osteoporosis",
        "profile": "standard",
        "epochs": None,
    }
    pipeline.validate(job)
    pipeline.train(job)
    before = RunLayout(config.runs_root, "before").model("knee_osteoporosis", "standard")
    assert read_json(before.training_json)["weights_used"] == "none (no shared backbone yet; run `medcore pretrain`)"

    registry = registry_of(config)
    record = pretrain_backbone(
        config, config.profiles["standard"], registry, epochs=1, conditions=["pneumonia", "knee_osteoporosis"]
    )
    assert record["conditions"] == ["pneumonia", "knee_osteoporosis"]
    assert set(record["val_auc"]) == {"pneumonia", "knee_osteoporosis"}
    assert not registry.shared_backbone_work.exists()
    backbone = keras.models.load_model(registry.shared_backbone, compile=False)
    assert backbone.get_layer("task_logits").get_weights()[0].shape == (1024, 2)

    job = {**job, "run_id": "after"}
    pipeline.validate(job)
    pipeline.train(job)
    training = read_json(RunLayout(config.runs_root, "after").model("knee_osteoporosis", "standard").training_json)
    assert training["weights_used"].startswith(f"shared {registry.shared_backbone} (")
    assert int(training["weights_used"].rsplit("(", 1)[1].split()[0]) > 100
    assert len(training["history"]["loss"]) == 2  # one frozen epoch, then one fine-tuning epoch


def test_pretrain_command_rejects_an_unknown_profile_in_one_line(tmp_path, tiny_config, own_data):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "medcore.cli",
            "pretrain",
            "--config",
            str(_config(tmp_path, tiny_config, own_data)),
            "--profile",
            "huge",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"medcore: error: {tmp_path / 'pretrain.yaml'}: no profile named 'huge' (have standard, intensive)"
    ]


PRETRAIN_JOB = (
    "import sys; from medcore.config import load_config; from medcore.model.pretraining import pretrain_backbone; "
    "from medcore.nights.registry import registry_of; c = load_config(sys.argv[1]); "
    "pretrain_backbone(c, c.profiles['standard'], registry_of(c), epochs=3, "
    "conditions=['pneumonia', 'knee_osteoporosis'])"
)


@pytest.mark.slow
def test_killed_pretraining_resumes_after_its_last_finished_epoch(tmp_path, tiny_config, own_data):
    """SIGKILL after the first epoch; the rerun trains only epochs 2 and 3 and keeps one history of 3."""
    path = _config(tmp_path, tiny_config, own_data)
    registry = registry_of(load_config(path))
    metadata = registry.shared_backbone_work / "backup" / "training_metadata.json"
    kill_after_first_epoch(PRETRAIN_JOB, [str(path)], metadata)
    assert not registry.shared_backbone.exists(), "a killed pre-training must not leave a backbone behind"

    rerun = subprocess.run([sys.executable, "-c", PRETRAIN_JOB, str(path)], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    record = read_json(registry.shared_backbone_record)
    assert record["epochs"] == 3 and len(record["val_auc_by_epoch"]) == 2
    assert registry.shared_backbone.is_file() and not registry.shared_backbone_work.exists()
