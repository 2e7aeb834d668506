"""Fuzzing `medcore predict`: hostile images are refused with a reason or scored, never a failed batch or a
traceback; hostile --out targets are written only when absent or its own (issue 39)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from medcore.errors import MedcoreError
from medcore.jsonio import check_output_file
from tests.data.test_dicom_fuzz import CHANGES, COMPRESSED, PLAIN, SYNTAXES, _mutated
from tests.data.test_validation_fuzz import file_bytes
from tests.fuzzing import EXAMPLES, FUZZ, count

# A case here promotes several nights or runs a model: a quarter of the cases, still > 50 under `make fuzz`.
LIGHTER = settings(FUZZ, max_examples=max(10, EXAMPLES // 4))

pytestmark = pytest.mark.filterwarnings("ignore")

dicom_files = st.builds(
    lambda which, changes, syntax: _mutated(PLAIN if which else COMPRESSED, changes, syntax, None),
    st.booleans(),
    CHANGES,
    st.one_of(st.none(), st.sampled_from(SYNTAXES)),
)


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(2, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x)))


@LIGHTER
@given(
    files=st.lists(
        st.tuples(st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".dcm"]), st.one_of(file_bytes, dicom_files)),
        min_size=1,
        max_size=4,
    )
)
def test_hostile_images_given_to_predict_are_refused_with_a_reason_or_scored(tiny_model, files):
    """What validation's guards accept, predict scores (a probability in [0, 1]); the rest have a one-line reason."""
    from medcore.assess.evaluation import predict_files, refusals

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (suffix, content) in enumerate(files):
            path = Path(tmp) / f"{i}{suffix}"
            path.write_bytes(content)
            paths.append(path)
        reasons = refusals(paths)
        assert all("\n" not in r for r in reasons)
        usable = [p for p, why in zip(paths, reasons, strict=True) if not why]
        if usable:
            scores = predict_files(tiny_model, usable, batch_size=2)
            assert len(scores) == len(usable) and np.all((scores >= 0) & (scores <= 1))
    count("predict inputs")


TARGETS = ["absent", "own", "foreign", "empty", "symlink", "dangling", "fifo", "folder", "inside", "no folder"]
HEADER = "path,probability,predicted,refused"


@FUZZ
@given(kind=st.sampled_from(TARGETS), name=st.text(st.characters(blacklist_characters="/\x00"), min_size=1, max_size=8))
@example(kind="absent", name="\udd00")  # found by CI's draw: a name no file system call can encode
def test_output_paths_are_written_only_when_absent_or_its_own(kind, name):
    """check_output_file accepts only an absent path or a file whose first line is the header; everything else is
    one line, and the target is left as it was."""
    with tempfile.TemporaryDirectory() as tmp:
        root, images = Path(tmp), Path(tmp) / "images"
        images.mkdir()
        path = (images if kind == "inside" else root / "missing" if kind == "no folder" else root) / f"{name}.csv"
        try:
            os.fsencode(path)  # a lone surrogate: refused by name, in one line (checked apart from the kinds below)
        except UnicodeEncodeError:
            with pytest.raises(MedcoreError, match="not a file name this system can write"):
                check_output_file(path, HEADER, (images,))
            return
        try:
            if kind == "own":
                path.write_text(HEADER + "\na,0.5,1,\n")
            elif kind == "foreign":
                path.write_text("something else\n")
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind in ("symlink", "dangling"):
                (root / "target").write_text(HEADER + "\n")
                path.symlink_to(root / ("target" if kind == "symlink" else "nowhere"))
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "folder":
                path.mkdir()
        except (OSError, ValueError):
            return  # a name this file system refuses (or cannot encode)
        before = os.lstat(path) if os.path.lexists(path) else None
        try:
            check_output_file(path, HEADER, (images,))
        except MedcoreError as exc:
            assert kind not in ("absent", "own") and "\n" not in str(exc)
        else:
            assert kind in ("absent", "own"), kind
        after = os.lstat(path) if os.path.lexists(path) else None
        assert (before is None) == (after is None) and (before is None or before.st_ino == after.st_ino)
        if kind == "fifo":
            assert stat.S_ISFIFO(after.st_mode)
    count("output paths")
