"""Reading the three dataset forms and making leak-free splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medcore.config import load_config
from medcore.data.datasets import assign_splits, label_manifest, read_manifest


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
            rows.append(
                {
                    "path": f"/x/{g}_{i}",
                    "relpath": f"{g}_{i}",
                    "raw_label": str(label),
                    "label": label,
                    "split": "",
                    "group": f"g{g}",
                }
            )
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


# --- the readers on hand-made sources -------------------------------------------------------------


def _source(tmp_path, condition: str, monkeypatch):
    from medcore.data.datasets import read_source
    from tests.conftest import write_yaml

    monkeypatch.delenv("MEDCORE_DATA_ROOT", raising=False)
    path = write_yaml(
        tmp_path / "c.yaml", f"data_root: {tmp_path / 'data'}\nconditions:\n  c: {condition}\nprofiles:\n  p: {{}}\n"
    )
    config = load_config(path)
    return read_source(config, config.conditions["c"])


def _touch(path, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_csv_reader_survives_bom_backslashes_and_garbage_cells(tmp_path, monkeypatch):
    """A spreadsheet's BOM, Windows paths, NUL bytes, escapes and odd splits are read and marked for validation."""
    root = tmp_path / "data" / "set"
    _touch(root / "img" / "a.png")
    text = (
        "image,label,split,patient\n"
        "img\\a.png,1.0,Train,p1\n"
        "img/\x00.png,0,valid,\n"
        ",0,test,p3\n"
        "../../etc/passwd,1,holdout,p4\n"
    )
    _touch(root / "labels.csv", b"\xef\xbb\xbf" + text.encode())
    condition = (
        "{dataset: set, layout: csv, manifest: labels.csv, positive: ['1'], negative: ['0'], group_column: patient}"
    )
    frame = _source(tmp_path, condition, monkeypatch).frame
    assert frame["path"][0] == str((root / "img" / "a.png").resolve()) and frame["relpath"][0] == "img/a.png"
    assert frame["path_problem"].tolist() == ["", "invalid", "invalid", "outside"]
    assert frame["where"][2] == "row 3 of labels.csv (empty image cell)"
    assert frame["split"].tolist() == ["train", "val", "test", ""]
    assert frame["source_split"].tolist() == ["Train", "valid", "test", "holdout"]
    assert frame["group_known"].tolist() == [True, False, True, True] and frame["group"][1] == "img/\x00.png"
    assert frame["label"].tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize("payload", [b"\x00\x01\x02binary\xff\xfe", b"", b'image,label\n"unclosed,1\n' * 3])
def test_unreadable_manifests_are_one_line_data_errors(tmp_path, monkeypatch, payload):
    """Binary, empty or malformed CSV files are a DataError naming the file, never a pandas traceback."""
    from medcore.errors import DataError

    _touch(tmp_path / "data" / "set" / "labels.csv", payload)
    with pytest.raises(DataError) as caught:
        _source(
            tmp_path, "{dataset: set, layout: csv, manifest: labels.csv, positive: ['1'], negative: ['0']}", monkeypatch
        )
    assert "labels.csv" in str(caught.value) and "\n" not in str(caught.value)


def test_folder_reader_names_odd_splits_skips_non_images_and_refuses_links_out(tmp_path, monkeypatch):
    """An unknown top folder beside split folders keeps its name; DICOM read, .nii skipped; links out not followed."""
    root = tmp_path / "data" / "set"
    for relpath in (
        "train/pos/a.png",
        "train/neg/b.PNG",
        "test/pos/c.jpg",
        "holdout/neg/d.png",
        "train/pos/scan.nii",
        "train/pos/film.dcm",
        "train/pos/.DS_Store",
        "README.md",
        "train/notes.txt",
        "shared/f.png",
    ):
        _touch(root / relpath)
    _touch(tmp_path / "elsewhere" / "e.png")
    (root / "test" / "neg").symlink_to(tmp_path / "elsewhere")
    (root / "train" / "pos" / "g.png").symlink_to(tmp_path / "elsewhere" / "e.png")
    (root / "train" / "loop").symlink_to(root)  # inside the dataset: followed, and must not recurse forever
    (root / "val").mkdir()
    (root / "val" / "pos").symlink_to(root / "shared")  # a link that stays inside the dataset is followed
    source = _source(tmp_path, "{dataset: set, layout: folders, positive: [pos], negative: [neg]}", monkeypatch)
    frame = source.frame.set_index("relpath")
    assert sorted(frame.index) == [
        "holdout/neg/d.png",
        "shared/f.png",
        "test/neg/",
        "test/pos/c.jpg",
        "train/neg/b.PNG",
        "train/pos/a.png",
        "train/pos/film.dcm",
        "train/pos/g.png",
        "val/pos/f.png",
    ]
    assert frame.loc["holdout/neg/d.png", ["source_split", "split"]].tolist() == ["holdout", ""]
    for outside in ("test/neg/", "train/pos/g.png"):
        assert frame.loc[outside, ["path", "path_problem"]].tolist() == ["", "outside"], outside
    assert frame.loc["val/pos/f.png", "path_problem"] == ""
    assert source.skipped == ("train/pos/scan.nii",)


def test_group_pattern_marks_the_names_it_cannot_read(tmp_path, monkeypatch):
    """Names that match group_pattern share a group; the others are their own group and marked unknown."""
    root = tmp_path / "data" / "set"
    for name in ("person1_virus_1.png", "person1_bacteria_2.png", "IM-0001.png"):
        _touch(root / "pos" / name)
    condition = r"{dataset: set, layout: folders, positive: [pos], negative: [neg], group_pattern: '^(person\d+)_'}"
    frame = _source(tmp_path, condition, monkeypatch).frame.set_index("relpath")
    assert frame.loc["pos/person1_virus_1.png", "group"] == "person1"
    assert frame.loc["pos/person1_bacteria_2.png", "group"] == "person1"
    assert frame.loc["pos/IM-0001.png", ["group", "group_known"]].tolist() == ["pos/IM-0001.png", False]


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("1", "ok"),
        (" 0 ", "ok"),
        ("01", "ok"),
        ("1.0", "float_coded"),
        ("0.000", "float_coded"),
        ("1e0", "float_coded"),
        ("", "missing"),
        ("NaN", "missing"),
        ("null", "missing"),
        (float("nan"), "missing"),
        ("0.5", "fractional"),
        ("-1.0", "unknown"),
        ("2", "unknown"),
        ("inf", "unknown"),
        ("yes", "unknown"),
        ("3", "excluded"),
        ("3.0", "excluded"),
    ],
)
def test_label_kinds(raw, kind):
    """Each raw label value lands in exactly one kind: ok, float-coded, excluded, missing, fractional or unknown."""
    from medcore.config import Condition
    from medcore.data.datasets import classify_labels

    condition = Condition("c", "d", "csv", positive=("1",), negative=("0",), manifest="m.csv", exclude=("3",))
    assert classify_labels(pd.Series([raw], dtype=object), condition).tolist() == [kind]


def test_splits_can_follow_a_merged_group_column():
    """assign_splits keeps rows that share `group_column` together even when their patient groups differ."""
    frame = _frame(120, 1)
    frame["merged"] = frame["group"]
    frame.loc[frame.index[:40], "merged"] = "one"  # forty single-image groups joined into one
    split = assign_splits(frame, 0.15, 0.15, seed=2, group_column="merged")
    assert split.loc[split["merged"] == "one", "split"].nunique() == 1


def test_pad_keeps_the_aspect_ratio_and_the_masks_find_the_content(tmp_path):
    """`resize: pad` fits a 20x40 film into the square with black bands; content_masks marks the film."""
    import cv2

    from medcore.data.datasets import content_masks, image_dataset

    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.full((20, 40), 200, np.uint8))
    paths = np.array([str(wide)])
    padded = next(iter(image_dataset(paths, np.zeros(1, np.float32), 32, 1, training=False, seed=0, resize="pad")))[0]
    squashed = next(iter(image_dataset(paths, np.zeros(1, np.float32), 32, 1, training=False, seed=0)))[0]
    padded, squashed = padded.numpy()[0, ..., 0], squashed.numpy()[0, ..., 0]
    assert squashed.min() > 190  # stretched: the film fills the square
    mask = content_masks([str(wide)], 32, "pad")[0]
    assert mask.sum() == 32 * 16 and mask[8:24].all()  # 40x20 -> 32x16, centred
    assert padded[mask].min() > 150 and padded[~mask].max() < 1
    assert content_masks([str(wide)], 32, "squash").all()


def test_condition_resize_overrides_the_profile(tmp_path):
    """A condition's `resize` wins over its profile's; the others keep the profile's."""
    from tests.conftest import ROOT, write_yaml

    config = load_config(
        write_yaml(
            tmp_path / "c.yaml", f"extends: {ROOT / 'conditions.yaml'}\nprofiles: {{standard: {{resize: squash}}}}\n"
        )
    )
    standard = config.profiles["standard"]
    assert standard.for_condition(config.conditions["limb_abnormalities"]).resize == "pad"
    assert standard.for_condition(config.conditions["pneumonia"]).resize == "squash"


def test_datasets_that_feed_a_model_do_not_autotune_and_still_read_every_image(tmp_path):
    """No autotuning model thread (its sleep could stall every epoch end); all images, each once per epoch."""
    import cv2

    from medcore.data.datasets import image_dataset

    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.full((8, 8), 40 * i, np.uint8))
        paths.append(str(path))
    data = image_dataset(np.array(paths), np.arange(5, dtype=np.float32), 16, 2, training=True, seed=0)
    assert data.options().autotune.enabled is False
    for _ in range(2):  # a fresh iterator per epoch, as Keras makes them
        labels = np.concatenate([y.numpy() for _, y in data])
        assert sorted(labels.tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_border_erase_replaces_the_band_in_training_batches_only(tmp_path):
    """augmentation.border_erase 1.0: every training image's outer band is its mean; evaluation images are untouched."""
    import cv2

    from medcore.config import Augmentation, Profile
    from medcore.data.datasets import make_dataset

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (32, 32), dtype=np.uint8))
    frame = pd.DataFrame({"path": [str(p) for p in paths], "label": [0.0, 1.0, 0.0, 1.0]})
    profile = Profile("t", image_size=32, batch_size=4, augmentation=Augmentation(border_erase=1.0, border_band=0.125))
    erased = next(iter(make_dataset(frame, profile, training=True, seed=0)))[0].numpy()
    intact = next(iter(make_dataset(frame, profile, training=False, seed=0)))[0].numpy()
    band = np.ones((32, 32), bool)
    band[4:28, 4:28] = False
    for image in erased:
        assert np.ptp(image[band]) == 0 and abs(image[band][0, 0] - 127.5) < 5  # the mean of uniform noise
        assert np.ptp(image[~band]) > 100  # the centre is the film's own
    assert all(np.ptp(image[band]) > 100 for image in intact)

