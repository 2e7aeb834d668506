"""Run ids become folder names one to one: no two ids share a folder, and no id escapes the runs root."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medcore.errors import MedcoreError, RunIdError
from medcore.layout import RunLayout, is_run_folder_name, safe_run_id
from tests.fuzzing import FUZZ, count

IDS = [
    "a/b",
    "a_b",
    "a:b",
    "a+b",
    "a b",
    "a__b",
    "manual__2026-11-30T01:00:00+00:00",
    "manual__2026-11-30T01_00_00_00_00",
    "scheduled__2026-11-30T01:00:00+00:00",
    "x-h0123456789ab",
    "cli__20261130T010000",
    "../up",
    "up",
    "ü",
    "a/../b",
    ".hidden",
    "hidden",
]


def test_different_run_ids_never_share_a_folder(tmp_path):
    """`a/b` and `a_b` (and every other pair here) map to different folders, each directly under the runs root."""
    folders = {run_id: RunLayout(tmp_path, run_id).root for run_id in IDS}
    assert len(set(folders.values())) == len(IDS), folders
    for run_id, folder in folders.items():
        assert folder.parent == tmp_path and is_run_folder_name(folder.name), run_id
    assert safe_run_id("a_b") == "a_b" and safe_run_id("cli__20261130T010000") == "cli__20261130T010000"
    assert safe_run_id("a/b") == safe_run_id("a/b"), "the same id always finds its folder again"


@pytest.mark.parametrize("run_id", ["..", ".", "", "/", "...", "x" * 201, "a\x00b"])
def test_run_ids_that_name_no_folder_are_refused(run_id):
    """Ids with nothing to name a folder by are a one-line MedcoreError (also a ValueError)."""
    with pytest.raises(RunIdError) as caught:
        safe_run_id(run_id)
    assert isinstance(caught.value, MedcoreError) and isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


def test_cli_run_with_an_unusable_run_id_is_one_line(tiny_config, capsys):
    """`medcore run --run-id ..` exits 2 with one `medcore: error:` line and writes no run."""
    from medcore.cli import main

    assert main(["run", "--config", str(tiny_config), "--run-id", "..", "--condition", "knee_osteoporosis"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medcore: error: run id '..'"), err
    assert not (tiny_config.parent / "runs").exists() or not any((tiny_config.parent / "runs").iterdir())


ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40) | st.from_regex(
    r"[a-z]{1,3}[/_:+ .-]{1,2}[a-z]{1,3}(-h[0-9a-f]{12})?", fullmatch=True
)


@FUZZ
@given(first=ids, second=ids)
def test_fuzzed_run_ids_are_one_folder_each_or_a_one_line_error(first, second, tmp_path_factory):
    """Any two different ids get different folders directly under the runs root, or one refuses in one line."""
    root = tmp_path_factory.getbasetemp() / "runs"
    folders = []
    for run_id in (first, second):
        try:
            folders.append(RunLayout(root, run_id).root)
        except RunIdError as exc:
            assert "\n" not in str(exc)
            continue
        assert folders[-1].parent == root and is_run_folder_name(folders[-1].name), run_id
    if first != second and len(folders) == 2:
        assert folders[0] != folders[1], (first, second)
    count("run ids")
