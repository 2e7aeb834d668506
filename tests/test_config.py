"""Config loading: the real files load, and every mistake names its file and key."""

from __future__ import annotations

import pytest

from medcore.config import load_config
from medcore.errors import ConfigError
from tests.conftest import ROOT, write_yaml

MINIMAL = """
conditions:
  pneumonia: {dataset: pneumonia, layout: folders, positive: [PNEUMONIA], negative: [NORMAL]}
profiles:
  standard: {image_size: 64}
"""


def test_repository_configs_load():
    """conditions.yaml and the demo config describe 5 conditions and 2 profiles."""
    for path in (ROOT / "conditions.yaml", ROOT / "configs" / "demo.yaml"):
        config = load_config(path)
        assert set(config.conditions) == {"pneumonia", "cardiomegaly", "knee_osteoarthritis", "knee_osteoporosis",
                                          "limb_abnormalities"}
        assert set(config.profiles) == {"standard", "intensive"}
    demo = load_config(ROOT / "configs" / "demo.yaml")
    assert demo.profiles["standard"].image_size == 64
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
        (MINIMAL.replace("image_size: 64", "image_size: 64, lr_schedule: step"),
         "profiles.standard.lr_schedule: must be one of"),
        (MINIMAL.replace("image_size: 64", "image_size: 64, class_weighting: maybe"),
         "profiles.standard.class_weighting: must be true or false"),
        (MINIMAL.replace("negative: [NORMAL]", "negative: [PNEUMONIA]"), "listed as both positive and negative"),
        (MINIMAL.replace("positive: [PNEUMONIA]", "positive: []"), "conditions.pneumonia.positive: must be a non-empty"),
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


def test_config_that_is_a_folder_or_not_utf8_is_one_line(tmp_path):
    """A folder or a Latin-1 file given as the config is a ConfigError naming the file, not a traceback."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("data_root: d\xe9j\xe0\n".encode("latin-1"))
    for path, words in ((tmp_path, "is a folder"), (latin, "not UTF-8")):
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert words in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)
