"""The real public sets validate and load, their known quirks showing as findings (skipped without ../shared/datasets).

The expected numbers come from ../shared/datasets/README.md.
"""

from __future__ import annotations

import pytest

from medcore.config import load_config
from medcore.data.validation import validate_condition
from tests.conftest import REAL_DATA, ROOT

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not (REAL_DATA / "README.md").exists(),
        reason=f"real datasets not found at {REAL_DATA} (set MEDCORE_REAL_DATA to run these)",
    ),
]
NAMES = ["pneumonia", "cardiomegaly", "knee_osteoarthritis", "knee_osteoporosis", "limb_abnormalities"]


@pytest.fixture(scope="module")
def config():
    import os

    os.environ["MEDCORE_DATA_ROOT"] = str(REAL_DATA)
    try:
        return load_config(ROOT / "conditions.yaml")
    finally:
        del os.environ["MEDCORE_DATA_ROOT"]


@pytest.fixture(scope="module")
def results(config):
    """Each set validated once for the whole module (about 15 s for all five)."""
    return {name: validate_condition(config, config.conditions[name]) for name in NAMES}


def _findings(result) -> dict[str, dict]:
    return {f["code"]: f for f in result.to_dict()["findings"]}


@pytest.mark.parametrize("name", NAMES)
def test_real_set_is_trainable(results, name):
    """Each real set validates with both classes in every split, a fingerprint, and every row accounted for."""
    result = results[name]
    assert result.ok, result.summary()
    for split in ("train", "val", "test"):
        assert result.counts[split]["positive"] > 0 and result.counts[split]["negative"] > 0
    assert len(result.fingerprint) == 16
    totals = result.totals
    assert (
        totals["listed"]
        == totals["excluded"] + totals["dropped"] + totals["usable"]
        == totals["in_manifest"] + totals["excluded"] + totals["dropped"]
    )
    assert sum(f.dropped for f in result.findings) == totals["dropped"]


def test_pneumonia_patient_leak_is_dropped_from_train_and_duplicates_are_named(results):
    """The 170 patient ids shared by Kermany's train and test lose their 457 train images; test stays whole."""
    result = results["pneumonia"]
    findings = _findings(result)
    leak = findings["group_leakage"]
    assert leak["policy"] == "drop" and leak["dropped"] == 457 and "170 groups" in leak["message"]
    assert all(row.startswith("train/PNEUMONIA/person") for row in leak["dropped_rows"])
    assert result.counts["test"] == {"positive": 351, "negative": 209}
    manifest = result.manifest
    held_out = set(manifest.loc[manifest["split"] != "train", "group"])
    assert not held_out & set(manifest.loc[manifest["split"] == "train", "group"])
    val, test = (set(manifest.loc[manifest["split"] == s, "group"]) for s in ("val", "test"))
    assert not val & test
    duplicates = findings["duplicate_within_split"]
    assert duplicates["count"] == 60 and duplicates["message"].startswith("29 images")
    assert {"test/PNEUMONIA/person128_bacteria_606.jpeg", "test/PNEUMONIA/person128_bacteria_607.jpeg"} <= set(
        duplicates["rows"]
    )  # the README's example pair
    assert result.image_stats["channels"] == {"3": 5776}
    assert result.image_stats["encodings"] == {"gray as colour": 5776}


def test_cardiomegaly_float_labels_are_cast_and_groups_are_unknown(results):
    """All 5,440 float-coded labels are cast with a warning; without patient ids leakage is reported unchecked."""
    result = results["cardiomegaly"]
    findings = _findings(result)
    assert findings["label_float_coded"]["count"] == 5440 and findings["label_float_coded"]["severity"] == "warning"
    assert "groups_unknown" in findings
    assert result.counts["test"] == {"positive": 501, "negative": 501}
    assert not {"duplicate_within_split", "duplicate_across_splits", "near_duplicate_across_splits"} & set(findings)
    assert result.image_stats["max_height"] == 128 and result.image_stats["channels"] == {"1": 5440}


def test_knee_oa_grades_map_to_the_binary_task_without_leaks(results):
    """KL 2-4 are positive, 0-1 negative, in the source's patient-disjoint splits; the two knees are one group."""
    result = results["knee_osteoarthritis"]
    findings = _findings(result)
    assert result.counts == {
        "train": {"positive": 1555, "negative": 2087},
        "val": {"positive": 213, "negative": 309},
        "test": {"positive": 409, "negative": 531},
    }
    assert not {"group_leakage", "duplicate_within_split", "duplicate_across_splits"} & set(findings)
    assert result.groups["groups"] == 2552 and result.groups["largest"] == 2
    assert "group_mixed_labels" in findings  # a patient's left and right knee can have different grades


def test_knee_osteoporosis_images_in_two_classes_are_dropped(results):
    """The 7 images stored under two classes lose every copy; osteopenia is excluded and counted."""
    result = results["knee_osteoporosis"]
    findings = _findings(result)
    conflict = findings["duplicate_conflicting_labels"]
    assert conflict["policy"] == "drop" and conflict["count"] == 15 and conflict["message"].startswith("7 images")
    assert sorted(conflict["dropped_rows"]) == sorted(
        ["normal/N1.JPEG [normal]", "normal/N15.jpg [normal]", "normal/N23.jpg [normal]"]
        + [f"osteoporosis/{name}.jpg [osteoporosis]" for name in ("OS40", "OS32", "OS24", "OS8", "OS9")]
    )
    assert findings["label_excluded"]["count"] == 139 and "'osteopenia' (139)" in findings["label_excluded"]["message"]
    assert result.totals == {"listed": 215, "excluded": 139, "dropped": 8, "usable": 68, "in_manifest": 68}
    # the same-class copies (N16 = N21, ...) are kept but never split apart by the split made here
    split = result.manifest.set_index("relpath")["split"]
    assert split["normal/N16.jpg"] == split["normal/N21.jpg"]
    assert split["osteoporosis/OS25.jpg"] == split["osteoporosis/OS49.jpg"]


def test_limb_study_groups_valid_split_and_blank_films(results):
    """MURA's `valid` is val, patients form the groups (2 hold both classes), and two blank films are dropped."""
    result = results["limb_abnormalities"]
    findings = _findings(result)
    assert result.counts["val"] == {"positive": 126, "negative": 132}  # 133 negatives less one blank film
    assert result.groups["groups"] == 707 and "column 'patient_id'" in findings["group_summary"]["message"]
    assert findings["group_mixed_labels"]["message"].startswith("2 groups")
    assert sorted(findings["image_blank"]["dropped_rows"]) == [
        "images/train/patient02720/study1_positive/image1.jpg",
        "images/valid/patient11679/study1_negative/image3.jpg",
    ]
    assert result.image_stats["channels"] == {"1": 854, "3": 677}


def test_every_real_set_loads_through_the_training_input_pipeline(results):
    """A sample of each validated manifest decodes through make_dataset into finite 3-channel batches."""
    import numpy as np

    from medcore.config import Profile
    from medcore.data.datasets import make_dataset

    profile = Profile("probe", image_size=64, batch_size=12)
    for name, result in results.items():
        sample = result.manifest.groupby("split").head(4)
        images, labels = next(iter(make_dataset(sample, profile, training=False, seed=0)))
        assert images.shape == (12, 64, 64, 3), name
        assert np.isfinite(images.numpy()).all() and set(np.unique(labels.numpy())) <= {0.0, 1.0}
