"""Config loading: the real files load, and every mistake names its file and key."""

from __future__ import annotations

import pytest

from medcore.config import Config, Profile, config_reference, load_config, reference_document
from medcore.errors import ConfigError
from tests.conftest import ROOT, write_yaml

MINIMAL = """
conditions:
  pneumonia: {dataset: pneumonia, layout: folders, positive: [PNEUMONIA], negative: [NORMAL]}
profiles:
  standard: {image_size: 64}
"""


def test_repository_configs_load():
    """conditions.yaml and every config under configs/ describe the 5 conditions and 2 profiles."""
    for path in (ROOT / "conditions.yaml", *sorted((ROOT / "configs").glob("*.yaml"))):
        config = load_config(path)
        assert set(config.conditions) == {
            "pneumonia",
            "cardiomegaly",
            "knee_osteoarthritis",
            "knee_osteoporosis",
            "limb_abnormalities",
        }
        assert set(config.profiles) == {"standard", "intensive"}
        # DenseNet121's `relu` map is 1/32 of the image: every shipped profile must give a 4x4 map or more.
        assert all(p.image_size // 32 >= 4 for p in config.profiles.values()), path
    demo = load_config(ROOT / "configs" / "demo.yaml")
    assert demo.profiles["standard"].image_size == 128
    base = load_config(ROOT / "conditions.yaml")
    assert demo.profiles["standard"].patience == base.profiles["standard"].patience  # inherited, not restated
    assert demo.profiles["standard"].lr_schedule == "cosine"
    assert demo.conditions["cardiomegaly"].positive == ("1",)


def test_data_root_is_relative_to_the_file_and_env_overrides(tmp_path, monkeypatch):
    """data_root resolves against the YAML's folder; MEDCORE_DATA_ROOT wins over it."""
    monkeypatch.delenv("MEDCORE_DATA_ROOT", raising=False)
    path = write_yaml(tmp_path / "c.yaml", "data_root: sets\n" + MINIMAL)
    assert load_config(path).data_root == (tmp_path / "sets").resolve()
    monkeypatch.setenv("MEDCORE_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert load_config(path).data_root == (tmp_path / "elsewhere").resolve()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("conditions: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
        (MINIMAL.replace("layout: folders", "layout: folder"), "conditions.pneumonia.layout: must be one of"),
        (MINIMAL.replace("dataset: pneumonia, ", ""), "conditions.pneumonia.dataset: is required"),
        (MINIMAL.replace("image_size: 64", "image_size: big"), "profiles.standard.image_size: must be an integer"),
        (MINIMAL.replace("image_size: 64", "image_size: 16"), "profiles.standard.image_size: must be between"),
        (MINIMAL.replace("image_size: 64", "imagesize: 64"), "profiles.standard.imagesize: unknown key"),
        (
            MINIMAL.replace("image_size: 64", "image_size: 64, lr_schedule: step"),
            "profiles.standard.lr_schedule: must be one of",
        ),
        (
            MINIMAL.replace("image_size: 64", "image_size: 64, class_weighting: maybe"),
            "profiles.standard.class_weighting: must be true or false",
        ),
        (MINIMAL.replace("negative: [NORMAL]", "negative: [PNEUMONIA]"), "listed as both positive and negative"),
        (
            MINIMAL.replace("positive: [PNEUMONIA]", "positive: []"),
            "conditions.pneumonia.positive: must be a non-empty",
        ),
        ("profiles: {standard: {}}\n", "conditions: at least one condition"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, expected):
    """Each malformed config raises ConfigError whose one-line message names the file and the key."""
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert expected in message
    assert "\n" not in message


def test_yaml_syntax_error_gives_line(tmp_path):
    """A YAML syntax error points at the line."""
    path = write_yaml(tmp_path / "bad.yaml", "conditions:\n  a: {dataset: x\nprofiles: {}\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(path)


def test_missing_file_and_circular_extends(tmp_path):
    """A missing file and an extends loop are config errors, not crashes."""
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    write_yaml(tmp_path / "a.yaml", "extends: b.yaml\n")
    write_yaml(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


# One bad value per row: (what to change in MINIMAL, the key path named, words of the problem).
BAD_VALUES = [
    # NaN and infinities: YAML's .nan / .inf are floats and slip through a plain `low <= x <= high`.
    ("learning_rate: 0.001", "learning_rate: .nan", "profiles.standard.learning_rate", "must be a finite number"),
    ("learning_rate: 0.001", "learning_rate: .inf", "profiles.standard.learning_rate", "must be a finite number"),
    ("learning_rate: 0.001", "learning_rate: -.inf", "profiles.standard.learning_rate", "must be a finite number"),
    ("seed: 1", "split: {val_fraction: .nan}", "split.val_fraction", "must be a finite number between 0.01 and 0.5"),
    ("seed: 1", "registry: {gates: {roc_auc: .nan}}", "registry.gates.roc_auc", "must be a finite number"),
    ("seed: 1", "evaluation: {tiers: {good: .inf}}", "evaluation.tiers.good", "must be a finite number"),
    ("seed: 1", "validation: {min_class_fraction: .nan}", "validation.min_class_fraction", "finite number"),
    # unknown keys, at every depth
    ("seed: 1", "sed: 1", "sed", "unknown key (allowed: data_root, runs_root, seed,"),
    (
        "learning_rate: 0.001",
        "learning_rate: 0.001, augmentation: {spin: 0.1}",
        "profiles.standard.augmentation.spin",
        "unknown key (allowed: rotation, zoom, contrast, horizontal_flip, border_erase, border_band)",
    ),
    ("seed: 1", "evaluation: {tiers: {great: 0.99}}", "evaluation.tiers.great", "unknown key"),
    ("seed: 1", "registry: {gates: {auc: 0.7}}", "registry.gates.auc", "unknown key (allowed: accuracy, precision"),
    ("seed: 1", "gradcam: {samples: 4, gradcam_samples: 2}", "gradcam.gradcam_samples", "unknown key"),
    ("negative: [NORMAL]", "negative: [NORMAL], name: other", "conditions.pneumonia.name", "named by its key"),
    # wrong types: rejected, never coerced
    ("learning_rate: 0.001", "learning_rate: '0.001'", "profiles.standard.learning_rate", "must be a finite number"),
    ("learning_rate: 0.001", "learning_rate: 0.001, epochs: 2.5", "profiles.standard.epochs", "must be an integer"),
    (
        "learning_rate: 0.001",
        "learning_rate: 0.001, epochs: true",
        "profiles.standard.epochs",
        "must be an integer between 1 and 1000, got true",
    ),
    (
        "learning_rate: 0.001",
        "learning_rate: 0.001, class_weighting: 1",
        "profiles.standard.class_weighting",
        "must be true or false, got 1",
    ),
    ("seed: 1", "gradcam: {layer: 7}", "gradcam.layer", "must be text, got 7"),
    ("seed: 1", "evaluation: [1, 2]", "evaluation", "must be a mapping of keys, got a list"),
    ("seed: 1", "notify: {recipients: 5}", "notify.recipients", "must be a list of e-mail addresses"),
    ("seed: 1", "seed: 1.5", "seed", "must be an integer"),
    (
        "learning_rate: 0.001",
        "learning_rate: 0.001, precision: bf16",
        "profiles.standard.precision",
        "must be one of auto, float32, mixed_bfloat16, onednn_amp, got 'bf16'",
    ),
    # out of bounds
    ("learning_rate: 0.001", "learning_rate: 0", "profiles.standard.learning_rate", "must be between 1e-08 and 1.0"),
    (
        "learning_rate: 0.001",
        "learning_rate: 0.001, batch_size: 0",
        "profiles.standard.batch_size",
        "must be between 1 and 4096, got 0",
    ),
    ("seed: 1", "seed: -1", "seed", "must be between 0 and 2147483647"),
    ("seed: 1", "evaluation: {confidence: 1.5}", "evaluation.confidence", "must be between 0.5 and 0.999, got 1.5"),
    ("seed: 1", "evaluation: {tiers: {excellent: 0.75}}", "evaluation.tiers.excellent", "must be above good"),
    ("seed: 1", "validation: {min_per_class: {val: 0}}", "validation.min_per_class.val", "must be between 1 and"),
    # progressive resizing must start smaller and leave a full-size epoch to select
    (
        "learning_rate: 0.001",
        "learning_rate: 0.001, progressive: {epochs: 2, image_size: 64}",
        "profiles.standard.progressive.image_size",
        "must be below the profile's image_size (64)",
    ),
    (
        "learning_rate: 0.001",
        "learning_rate: 0.001, epochs: 3, progressive: {epochs: 3, image_size: 32}",
        "profiles.standard.progressive.epochs",
        "must leave one of the 3 epochs at full size",
    ),
    # a condition's own keys for a profile: the profile must exist, and each key is checked as the profile's
    (
        "negative: [NORMAL]}",
        "negative: [NORMAL], profiles: {fast: {epochs: 3}}}",
        "conditions.pneumonia.profiles.fast",
        "no profile named 'fast' (have standard)",
    ),
    (
        "negative: [NORMAL]}",
        "negative: [NORMAL], profiles: {standard: {epochs: 0}}}",
        "conditions.pneumonia.profiles.standard.epochs",
        "must be between 1 and 1000",
    ),
    (
        "negative: [NORMAL]}",
        "negative: [NORMAL], profiles: {standard: {epoch: 3}}}",
        "conditions.pneumonia.profiles.standard.epoch",
        "unknown key",
    ),
    (
        "negative: [NORMAL]}",
        "negative: [NORMAL], profiles: {standard: {name: other}}}",
        "conditions.pneumonia.profiles.standard.name",
        "unknown key",
    ),
]
FULL = "seed: 1\n" + MINIMAL.replace("image_size: 64", "image_size: 64, learning_rate: 0.001")


@pytest.mark.parametrize(("old", "new", "key", "problem"), BAD_VALUES, ids=[row[1] for row in BAD_VALUES])
def test_bad_value_is_one_line_naming_file_and_key(tmp_path, old, new, key, problem):
    """NaN, infinities, unknown keys, wrong types and out-of-bounds values each give `file: key: problem`, one line."""
    assert old in FULL
    path = write_yaml(tmp_path / "conditions.yaml", FULL.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message, message
    assert "\n" not in message


def test_a_condition_trains_a_profile_with_its_own_keys(tmp_path):
    """`conditions.<c>.profiles.<p>` overrides keys of that profile for that condition only, and the training
    timeout follows the longest profile any condition trains."""
    text = MINIMAL.replace(
        "negative: [NORMAL]}",
        "negative: [NORMAL]}\n  limb: {dataset: limb, layout: folders, positive: [p], negative: [n], resize: pad,\n"
        "         profiles: {standard: {epochs: 18, augmentation: {zoom: 0.2}}}}",
    )
    config = load_config(write_yaml(tmp_path / "c.yaml", text))
    trained = config.trained_profiles()
    limb, pneumonia = trained[("limb", "standard")], trained[("pneumonia", "standard")]
    assert (limb.epochs, limb.augmentation.zoom, limb.resize, limb.image_size) == (18, 0.2, "pad", 64)
    assert (pneumonia.epochs, pneumonia.resize) == (10, "squash") and config.profiles["standard"].epochs == 10
    assert (
        config.tasks.train_minutes(trained)
        == config.tasks.train_minutes_fixed + 18 * config.tasks.train_minutes_per_epoch
    )


def test_error_names_the_file_that_wrote_the_key(tmp_path):
    """With `extends`, a bad value is reported in the file that holds it, not the one that was loaded."""
    base = write_yaml(tmp_path / "base.yaml", MINIMAL.replace("image_size: 64", "image_size: 64, epochs: .nan"))
    child = write_yaml(tmp_path / "child.yaml", "extends: base.yaml\nprofiles: {standard: {patience: 2}}\n")
    with pytest.raises(ConfigError, match=rf"^{base}: profiles\.standard\.epochs: must be an integer"):
        load_config(child)
    write_yaml(child, "extends: base.yaml\nprofiles: {standard: {epochs: 3, patience: -2}}\n")
    with pytest.raises(ConfigError, match=rf"^{child}: profiles\.standard\.patience: must be between 0 and 1000"):
        load_config(child)


def test_gradcam_seed_defaults_to_the_run_seed(tmp_path):
    """The seed is read once: Grad-CAM's random baseline uses it unless gradcam.seed says otherwise."""
    config = load_config(write_yaml(tmp_path / "a.yaml", "seed: 42\n" + MINIMAL))
    assert (config.seed, config.gradcam.seed) == (42, 42)
    config = load_config(write_yaml(tmp_path / "b.yaml", "seed: 42\ngradcam: {seed: 7}\n" + MINIMAL))
    assert (config.seed, config.gradcam.seed) == (42, 7)


def test_settings_built_in_code_are_validated_too():
    """A Profile made by hand goes through the same declarations as one read from YAML."""
    from pydantic import ValidationError

    assert Profile("p", image_size=32).image_size == 32
    with pytest.raises(ValidationError):
        Profile("p", image_size=16)
    with pytest.raises(ValidationError):
        Profile("p", learning_rate=float("nan"))


def test_every_setting_has_a_description_and_the_reference_document_is_current():
    """Each row of the generated reference has a meaning, and docs/configuration.md is exactly the generated text."""
    rows = config_reference().splitlines()[2:]
    assert len(rows) > 60
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4 and all(cells), row
    assert "`profiles.<name>.learning_rate` | `0.001` | number 1e-08–1.0 |" in config_reference()
    assert config_reference() in reference_document()
    written = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert written == reference_document(), (
        "docs/configuration.md is stale: run `.venv/bin/python -m medcore.config --reference docs/configuration.md`"
    )


def test_config_path_is_not_a_yaml_key(tmp_path):
    """`path` is where the config was read from, set by the loader; writing it in YAML is an unknown key."""
    path = write_yaml(tmp_path / "c.yaml", "path: /etc\n" + MINIMAL)
    with pytest.raises(ConfigError, match="path: unknown key"):
        load_config(path)
    assert load_config(write_yaml(tmp_path / "d.yaml", MINIMAL)).path == (tmp_path / "d.yaml").resolve()
    assert isinstance(load_config(tmp_path / "d.yaml"), Config)


def test_config_that_is_a_folder_or_not_utf8_is_one_line(tmp_path):
    """A folder or a Latin-1 file given as the config is a ConfigError naming the file, not a traceback."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("data_root: d\xe9j\xe0\n".encode("latin-1"))
    for path, words in ((tmp_path, "is a folder"), (latin, "not UTF-8")):
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert words in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_config_is_read_only_from_a_regular_file_of_bounded_size(tmp_path):
    """A config or an `extends` that is a device, a FIFO or larger than the limit is one line naming the file,
    read without blocking and without reading it all (`--config /dev/zero` read 9.9 GB, issue 39)."""
    import os

    from medcore.config import MAX_CONFIG_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1) + "seed: 1\n")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    child = tmp_path / "child.yaml"
    for target, words in (
        (big, f"larger than {MAX_CONFIG_BYTES // 2**20} MiB"),
        (fifo, "not a regular file"),
        (tmp_path / "zero.yaml", "not a regular file"),
    ):
        if target.name == "zero.yaml":
            target.symlink_to("/dev/zero")
        with pytest.raises(ConfigError, match=words) as refused:
            load_config(target)
        assert target.stem in str(refused.value) and "\n" not in str(refused.value)  # /dev/zero once resolved
        child.write_text(f"extends: {target}\n")
        with pytest.raises(ConfigError, match=words):
            load_config(child)
