"""The `medcore` command's own checks, before any stage runs: outputs it may write, numbers in range."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import yaml

from medcore.cli import VALIDATE_OUTPUTS, main
from tests.test_config_fuzz import BASE, _dataset


def _validate(config: Path, out: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["validate", "--config", str(config), "--condition", "c", "--out", str(out)])
    return code, err.getvalue()


def test_validate_out_replaces_its_own_files_and_never_anyone_elses(tmp_path, monkeypatch):
    """--out into a fresh folder, then again over its own files; a folder whose validation.json or split.csv
    someone else wrote, or where one is a symlink, is refused in one line and left as it was."""
    for name in ("MEDCORE_DATA_ROOT", "MEDCORE_RUNS_ROOT", "MEDCORE_REGISTRY_ROOT"):
        monkeypatch.delenv(name, raising=False)
    _dataset(tmp_path / "set")
    config = tmp_path / "c.yaml"
    document = {**BASE, "data_root": str(tmp_path), "runs_root": str(tmp_path / "runs")}
    config.write_text(yaml.safe_dump(document))
    out = tmp_path / "out"
    assert _validate(config, out)[0] == 0
    assert _validate(config, out)[0] == 0, "a rerun replaces validate's own files"
    assert {p.name for p in out.iterdir()} >= set(VALIDATE_OUTPUTS)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "split.csv").write_text("somebody's own split\n")
    code, err = _validate(config, foreign)
    assert code == 2 and "was not written by medcore validate" in err and len(err.strip().splitlines()) == 1
    assert (foreign / "split.csv").read_text() == "somebody's own split\n"
    assert sorted(p.name for p in foreign.iterdir()) == ["split.csv"]

    (tmp_path / "precious").write_text("keep\n")
    (out / "validation.json").unlink()
    (out / "validation.json").symlink_to(tmp_path / "precious")
    code, err = _validate(config, out)
    assert code == 2 and "validation.json" in err
    assert (tmp_path / "precious").read_text() == "keep\n" and (out / "validation.json").is_symlink()
