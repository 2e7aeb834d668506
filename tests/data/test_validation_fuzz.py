"""Fuzzing: hostile image bytes and CSV cells end in findings or a one-line error, never a traceback."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medcore.config import load_config
from medcore.jsonio import dumps
from medcore.data.synthetic import phantom
from medcore.data.validation import ValidationResult, validate_condition
from tests.fuzzing import FUZZ, count

# Forged headers claim huge images on purpose; Pillow's warning about them is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def _valid_images() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    gray = phantom(rng, 32)
    encoded = [cv2.imencode(suffix, gray)[1].tobytes() for suffix in (".png", ".jpg", ".bmp")]
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "GIF")
    return encoded + [buffer.getvalue()]


VALID = _valid_images()
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"II*\x00"]


def _flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


def _png_claiming(width: int, height: int, depth: int, colour: int) -> bytes:
    """A PNG header claiming any size and depth, with a few bytes of image data: a bomb's shape, cheaply."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """The valid JPEG with its frame header (SOF0) rewritten to claim another size."""
    data = bytearray(VALID[1])
    at = data.index(b"\xff\xc0") + 5
    data[at : at + 4] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _jpeg_damaged(cut: int, zero_from: int, zero_len: int) -> bytes:
    """The valid JPEG cut short with an end marker appended, or with a run of zeroed bytes."""
    data = VALID[1]
    if cut:
        return data[: max(4, cut % len(data))] + b"\xff\xd9"
    start = zero_from % len(data)
    return data[:start] + bytes(min(zero_len, len(data) - start)) + data[start + zero_len :]


file_bytes = st.one_of(
    st.binary(max_size=600),
    st.builds(
        _png_claiming,
        st.integers(0, 2**31 - 1),
        st.integers(0, 2**31 - 1),
        st.sampled_from([1, 2, 4, 8, 16]),
        st.sampled_from([0, 2, 3, 4, 6]),
    ),
    st.builds(_jpeg_claiming, st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(_jpeg_damaged, st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 400)),
    st.builds(lambda data, n: data[:n], st.sampled_from(VALID), st.integers(0, 1500)),
    st.builds(
        _flip, st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 255)), max_size=12)
    ),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=300)),
    st.sampled_from(VALID),
)
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12)


def _write_config(root: Path, condition: str) -> Path:
    path = root / "c.yaml"
    path.write_text(
        f"data_root: {root / 'data'}\nruns_root: {root / 'runs'}\nconditions:\n  c: {condition}\n"
        "profiles:\n  p: {image_size: 32}\n"
    )
    return path


def _check(result: ValidationResult) -> None:
    """The invariants every outcome keeps: serialisable, one-line messages, every row accounted for."""
    record = result.to_dict()
    dumps(record)
    result.summary().encode("utf-8")
    assert all("\n" not in f["message"] for f in record["findings"])
    if result.ok:
        totals = result.totals
        assert totals["listed"] == totals["excluded"] + totals["dropped"] + totals["usable"]
        assert len(result.manifest) == totals["in_manifest"]
    else:
        assert result.reason and "\n" not in result.reason


@pytest.fixture(autouse=True)
def _no_env_roots(monkeypatch):
    monkeypatch.delenv("MEDCORE_DATA_ROOT", raising=False)
    monkeypatch.delenv("MEDCORE_RUNS_ROOT", raising=False)


@FUZZ
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["train/pos", "train/neg", "test/pos", "test/neg", "pos", "x/y/z"]),
            names,
            st.sampled_from([".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif"]),
            file_bytes,
        ),
        max_size=8,
    )
)
def test_hostile_image_files_end_in_findings(files):
    """Random, truncated, bit-flipped and mislabelled image files never crash validation."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data" / "set"
        rng = np.random.default_rng(1)
        for folder in ("train/pos", "train/neg", "test/pos", "test/neg"):
            (data / folder).mkdir(parents=True)
            for i in range(4):
                image = phantom(rng, 32, folder.endswith("pos"))
                (data / folder / f"ok{i}.png").write_bytes(cv2.imencode(".png", image)[1])
        for folder, name, suffix, content in files:
            (data / folder).mkdir(parents=True, exist_ok=True)
            try:
                (data / folder / f"{name}{suffix}").write_bytes(content)
            except OSError:
                continue  # a name the file system refuses is not a dataset anyone could have
        config = load_config(_write_config(root, "{dataset: set, layout: folders, positive: [pos], negative: [neg]}"))
        _check(validate_condition(config, config.conditions["c"]))
    count("image files")


cells = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "1",
            "0",
            "1.0",
            "0.0",
            "",
            "nan",
            "-1.0",
            "0.5",
            "train",
            "valid",
            "test",
            "holdout",
            "../x.png",
            "/etc/passwd",
        ]
    ),
)


@FUZZ
@given(rows=st.lists(st.tuples(cells, cells, cells, cells), max_size=10), raw=st.booleans())
def test_hostile_manifest_cells_end_in_findings_or_a_clear_error(rows, raw):
    """Garbage in every CSV column, quoted or raw, ends in exit 0/1 with findings or exit 2 with one line."""
    from medcore.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data" / "set"
        (data / "img").mkdir(parents=True)
        rng = np.random.default_rng(2)
        good = []
        for i in range(16):
            (data / "img" / f"{i}.png").write_bytes(cv2.imencode(".png", phantom(rng, 32, i % 2 == 0))[1])
            good.append((f"img/{i}.png", str(i % 2), "test" if i < 4 else "train", f"p{i}"))
        table = good + rows
        manifest = data / "labels.csv"
        if raw:  # cells written as they are: quotes, commas and newlines break the CSV itself
            manifest.write_text(
                "image,label,split,group\n" + "\n".join(",".join(r) for r in table) + "\n",
                encoding="utf-8",
                errors="surrogatepass",
            )
        else:
            pd.DataFrame(table, columns=["image", "label", "split", "group"]).to_csv(manifest, index=False)
        config = _write_config(
            root,
            "{dataset: set, layout: csv, manifest: labels.csv, positive: ['1'], negative: ['0'], group_column: group}",
        )
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", "--config", str(config), "--condition", "c", "--out", str(root / "out")])
        err = err.getvalue().strip().splitlines()
        assert code in (0, 1, 2)
        if code:
            assert err and err[-1].startswith("medcore: ")
        if code != 2:
            assert (root / "out" / "validation.json").exists()
    count("manifest cells")


@FUZZ
@given(content=st.binary(max_size=400))
def test_random_bytes_as_the_manifest_are_a_one_line_error(content):
    """A manifest of random bytes is either read (and validated) or a one-line unreadable-dataset error."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data" / "set").mkdir(parents=True)
        (root / "data" / "set" / "labels.csv").write_bytes(content)
        config = load_config(
            _write_config(root, "{dataset: set, layout: csv, manifest: labels.csv, positive: ['1'], negative: ['0']}")
        )
        result = validate_condition(config, config.conditions["c"])
        _check(result)
        assert not result.ok  # there are no images, whatever the bytes say
    count("manifest bytes")


labels = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)


@FUZZ
@given(
    positive=st.lists(labels, min_size=1, max_size=3),
    negative=st.lists(labels, min_size=1, max_size=3),
    cells=st.lists(
        st.one_of(labels, st.sampled_from(["1", "0", "1.0", "nan", "", " 1 ", "-0", "1e0", "∞"])),
        min_size=1,
        max_size=24,
    ),
)
def test_hostile_label_cells_and_label_lists_end_in_findings(positive, negative, cells):
    """Any label strings, in the config's positive/negative lists and in the manifest, end in a finding or a
    one-line config error; a label never counts as both classes."""
    import yaml

    from medcore.errors import ConfigError

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data" / "set"
        (data / "img").mkdir(parents=True)
        rng = np.random.default_rng(4)
        rows = []
        for i, cell in enumerate(cells):
            (data / "img" / f"{i}.png").write_bytes(cv2.imencode(".png", phantom(rng, 32, i % 2 == 0))[1])
            rows.append((f"img/{i}.png", cell, "test" if i % 4 == 0 else "train"))
        pd.DataFrame(rows, columns=["image", "label", "split"]).to_csv(data / "labels.csv", index=False)
        condition = yaml.safe_dump(
            {"dataset": "set", "layout": "csv", "manifest": "labels.csv", "positive": positive, "negative": negative},
            default_flow_style=True,
            allow_unicode=True,
            width=10**6,
        ).strip()
        try:
            config = load_config(_write_config(root, condition))
        except ConfigError as exc:
            assert "\n" not in str(exc) and "c.yaml" in str(exc)
        else:
            result = validate_condition(config, config.conditions["c"])
            _check(result)
            if result.ok:
                labels_of = dict(zip(result.manifest["relpath"], result.manifest["label"]))
                assert set(labels_of.values()) <= {0, 1}
    count("label cells")


def test_two_images_just_under_the_decode_limit_stay_under_the_fuzz_memory_limit(tmp_path):
    """The probe's memory case, in this process so `make fuzz` measures it: two 7999^2 RGBA16 PNGs (511 MB decoded
    each, just under the limit) in one dataset validate as usable, decoded one at a time by the budget."""
    from tests.data.test_validation import _png_of_zeros

    data = tmp_path / "data" / "set"
    rng = np.random.default_rng(3)
    for folder in ("train/pos", "train/neg", "test/pos", "test/neg"):
        (data / folder).mkdir(parents=True)
        for i in range(4):
            (data / folder / f"ok{i}.png").write_bytes(cv2.imencode(".png", phantom(rng, 32, "pos" in folder))[1])
    _png_of_zeros(data / "train" / "pos" / "big1.png", 7999)
    _png_of_zeros(data / "train" / "neg" / "big2.png", 7999)
    config = load_config(_write_config(tmp_path, "{dataset: set, layout: folders, positive: [pos], negative: [neg]}"))
    result = validate_condition(config, config.conditions["c"], workers=2)
    _check(result)
    assert result.totals["listed"] == 18
    count("memory bombs")
