"""Reading the three dataset forms and making leak-free splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medcore.config import load_config
from medcore.datasets import assign_splits, label_manifest, read_manifest


def test_every_form_reads_with_labels_splits_and_groups(tiny_config):
    """Folders with and without splits and both CSV forms give labelled manifests."""
    config = load_config(tiny_config)
    frames = {name: read_manifest(config, c) for name, c in config.conditions.items()}
    assert set(frames["pneumonia"]["split"]) == {"train", "test"}
    assert set(frames["knee_osteoarthritis"]["split"]) == {"train", "val", "test"}
    assert set(frames["knee_osteoporosis"]["split"]) == {""}
    assert set(frames["limb_abnormalities"]["split"]) == {"train", "val"}  # MURA's "valid"
    # float-coded 1.0 / 0.0 map to the configured [1] / [0]
    assert set(frames["cardiomegaly"]["label"]) == {0, 1}
    # osteopenia is neither positive nor negative
    osteo = frames["knee_osteoporosis"]
    assert (osteo.loc[osteo["raw_label"] == "osteopenia", "label"] == -1).all()
    # groups: Kermany-style person ids from names, patient ids from the CSV
    assert frames["pneumonia"]["group"].str.startswith("person").all()
    assert frames["limb_abnormalities"]["group"].str.startswith("patient").all()
    assert frames["limb_abnormalities"]["group"].nunique() < len(frames["limb_abnormalities"])


def test_labels_map_floats_strings_and_gaps():
    """Integral floats match integer labels; blanks, fractions and unknowns are -1."""
    from medcore.config import Condition

    condition = Condition("c", "d", "csv", positive=("1",), negative=("0",), manifest="m.csv")
    raw = pd.Series(["1.0", "0.0", "1", "0", "", "nan", "0.5", "2.0", "-1.0", "yes"])
    assert label_manifest(raw, condition).tolist() == [1, 0, 1, 0, -1, -1, -1, -1, -1, -1]


def _frame(n_groups: int, per_group: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = int(rng.random() < 0.3)
        for i in range(per_group):
            rows.append({"path": f"/x/{g}_{i}", "relpath": f"{g}_{i}", "raw_label": str(label), "label": label,
                         "split": "", "group": f"g{g}"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("per_group", [1, 3])
def test_made_splits_are_group_disjoint_stratified_and_seeded(per_group):
    """No group straddles splits; both classes reach every split; the same seed gives the same split."""
    frame = _frame(200, per_group)
    split = assign_splits(frame, 0.15, 0.15, seed=5)
    owners = split.groupby("group")["split"].nunique()
    assert (owners == 1).all()
    shares = split["split"].value_counts(normalize=True)
    assert 0.08 < shares["test"] < 0.25 and 0.08 < shares["val"] < 0.25
    for name in ("train", "val", "test"):
        assert split.loc[split["split"] == name, "label"].nunique() == 2
    assert split["split"].tolist() == assign_splits(frame, 0.15, 0.15, seed=5)["split"].tolist()
    assert split["split"].tolist() != assign_splits(frame, 0.15, 0.15, seed=6)["split"].tolist()


def test_given_splits_are_kept_and_only_val_is_made():
    """A dataset with train/test keeps them and carves val out of train only."""
    frame = _frame(100, 2)
    frame.loc[frame["group"].isin([f"g{i}" for i in range(20)]), "split"] = "test"
    frame.loc[frame["split"] == "", "split"] = "train"
    split = assign_splits(frame, 0.15, 0.15, seed=1)
    assert (split.loc[frame["split"] == "test", "split"] == "test").all()
    assert set(split.loc[frame["split"] == "train", "split"]) == {"train", "val"}
