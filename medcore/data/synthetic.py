"""Synthetic X-ray-like phantoms with a learnable finding, in the three forms the real sets take.

The finding is a bright, blurred disc in a fixed region (lower right of the image, jittered), so
a working model can learn it and a working Grad-CAM should point there.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcore.errors import MedcoreError
from medcore.jsonio import atomic_write_bytes, atomic_write_text

__all__ = [
    "phantom",
    "drawn_phantom",
    "finding_region",
    "bones",
    "write_demo_data",
    "dicom_bytes",
    "FINDING_CENTRE",
    "shortcut_phantoms",
]

FINDING_CENTRE = (0.68, 0.66)  # (x, y) as fractions of the image size


def phantom(rng: np.random.Generator, size: int = 64, finding: bool = False) -> np.ndarray:
    """Return one grayscale uint8 image: a body outline, rib-like bands, bones, noise, and maybe the finding."""
    return drawn_phantom(rng, size, finding)[0]


def finding_region(size: int, where: tuple[float, float, float]) -> np.ndarray:
    """Boolean (size, size) mask of a finding drawn at `where` = (x, y, radius) in fractions of the image."""
    cx, cy, radius = where
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2


def drawn_phantom(
    rng: np.random.Generator, size: int = 64, finding: bool = False, strength: float = 0.5, anatomy: bool = True
) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """A phantom and where its finding is, (x, y, radius) as fractions of the image (None without one).

    The radius is where the finding's brightness falls to 1/e of its peak: inside it a reader sees it.
    `strength` is the finding's peak brightness (fraction of white) above the body. `anatomy` adds
    bone-like bars (`bones`).
    """
    import cv2

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.52) / 0.46) ** 2 < 1.0
    image: np.ndarray = np.where(body, 0.35, 0.05).astype(np.float32)
    image += 0.08 * np.sin(yy * rng.uniform(18, 26) + rng.uniform(0, np.pi)) * body
    if anatomy:
        image += bones(rng, xx, yy) * body
    image += rng.normal(0.0, 0.04, size=image.shape).astype(np.float32)
    if finding:
        cx = FINDING_CENTRE[0] + rng.uniform(-0.05, 0.05)
        cy = FINDING_CENTRE[1] + rng.uniform(-0.05, 0.05)
        radius = rng.uniform(0.09, 0.13)
        disc = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (radius**2)))
        image += strength * disc
    image = cv2.GaussianBlur(image, (3, 3), 0)
    where = (float(cx), float(cy), float(radius)) if finding else None
    return np.clip(image * 255.0, 0, 255).astype(np.uint8), where


def bones(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, count: int = 3) -> np.ndarray:
    """Bright bone-like bars, each at a random place and angle: structure every film has, in either class.

    Real films have anatomy besides the finding; without it a map that lights up on any bright structure
    would point at the finding by default (the pointing game and the randomisation check would be too easy).
    The bars are as many and as long in every film, so they add no brightness a model could count instead
    of the finding.
    """
    layer = np.zeros_like(xx)
    for _ in range(count):
        cx, cy, angle = rng.uniform(0.25, 0.75), rng.uniform(0.2, 0.8), rng.uniform(0.0, np.pi)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
        layer += 0.22 * np.exp(-((across / 0.025) ** 2)) * (np.abs(along) < 0.18)
    return layer


def shortcut_phantoms(
    rng: np.random.Generator,
    count: int,
    size: int = 48,
    *,
    marker_on_positive: float = 0.8,
    marker_on_negative: float = 0.1,
    strength: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phantoms with a planted shortcut: (images (N, size, size) uint8, labels, marker present).

    Half are positive, with a weak finding (`strength`); a bright square marker, like a hospital's
    L/R token, sits in the top-left corner of `marker_on_positive` of the positives and
    `marker_on_negative` of the negatives, so the corner predicts the label better than the lesion.
    With both shares 0 these are clean phantoms with a weak finding. No bones: the probes' rules were
    measured on these phantoms without them.
    """
    labels = np.arange(count) % 2
    marked = np.where(labels == 1, rng.random(count) < marker_on_positive, rng.random(count) < marker_on_negative)
    side, at = max(2, size // 10), max(1, size // 32)
    images = []
    for label, mark in zip(labels, marked):
        image = drawn_phantom(rng, size, bool(label), strength, anatomy=False)[0]
        if mark:
            image[at : at + side, at : at + side] = 250
        images.append(image)
    return np.stack(images), labels, marked


def _encode(image: np.ndarray, suffix: str) -> bytes:
    import cv2

    ok, data = cv2.imencode(suffix, image)
    if not ok:
        raise RuntimeError(f"cannot encode {suffix}")
    return data.tobytes()


def dicom_bytes(
    values: np.ndarray,
    *,
    patient_id: str,
    study_uid: str,
    bits_stored: int = 12,
    monochrome1: bool = False,
    compress: bool = False,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    modality: str = "DX",
    view: str = "AP",
    body_part: str = "KNEE",
    burned_in: bool = False,
    frames: int = 1,
    extra: dict[str, str] | None = None,
    uid_seed: str = "",
) -> bytes:
    """A DICOM Part 10 file (DX For Presentation) holding `values` (2-D, 0..2**bits_stored-1, bright = dense).

    MONOCHROME1 stores the values inverted, as such films do; `compress` stores JPEG 2000 Lossless;
    `window` is (centre, width) and `rescale` (slope, intercept), both as the standard defines them;
    `extra` sets further header keywords (the no-PHI test fills them with identifying values).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    top = 2**bits_stored - 1
    stored = np.clip(values, 0, top).astype(np.uint16)
    if monochrome1:
        stored = (top - stored).astype(np.uint16)
    seed = uid_seed or f"{patient_id}/{study_uid}/{int(values.sum())}"
    sop_class = UID("1.2.840.10008.5.1.4.1.1.1.1")  # Digital X-Ray Image Storage - For Presentation
    sop = generate_uid(entropy_srcs=[seed, "sop"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.PatientID, ds.StudyInstanceUID = patient_id, study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = modality, view, body_part
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    _set_pixel_module(ds, stored.shape, bits_stored, monochrome1)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = np.concatenate([stored.ravel()] * frames).astype("<u2").tobytes()
    if compress:
        ds.compress(JPEG2000Lossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _set_pixel_module(ds: Any, shape: tuple[int, ...], bits_stored: int, monochrome1: bool) -> None:
    """The Image Pixel module of a one-sample, unsigned, 16-bit-allocated film of `shape`."""
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0


def _write_dicom_set(root: Path, per_class: int, rng: np.random.Generator, size: int) -> int:
    """knee_osteoporosis as a PACS export: 12-bit DX files, two per patient, in class folders.

    Every third file is MONOCHROME1, most carry a window (some behind a rescale), a few none (their
    own range is used), and the first is JPEG 2000 compressed, so a demo run exercises each path.
    """
    written = 0
    for label, prefix, positive, count in (
        ("normal", "N", False, per_class),
        ("osteopenia", "OP", False, per_class // 4),
        ("osteoporosis", "OS", True, per_class),
    ):
        for i in range(count):
            film = phantom(rng, size, positive).astype(np.uint16) * 16 + rng.integers(0, 16, (size, size), np.uint16)
            kind = written % 5
            rescale = (1.0, -1024.0) if kind == 4 else None
            window = None if kind == 3 else (1024.0, 4096.0) if kind == 4 else (2048.0, 4096.0)
            patient = f"DEMO{prefix}{i // 2:04d}"
            data = dicom_bytes(
                film,
                patient_id=patient,
                study_uid=f"1.2.826.0.1.3680043.10.543.{len(prefix)}.{i // 2}",
                monochrome1=written % 3 == 1,
                compress=written == 0,
                window=window,
                rescale=rescale,
                uid_seed=f"{label}/{i}",
            )
            atomic_write_bytes(root / label / f"{prefix}{i + 1}.dcm", data)
            written += 1
    return written


DEMO_SETS = ("pneumonia", "knee_oa", "knee_osteoporosis", "cardiomegaly", "limb")
MARKER = ".medcore-demo-data"  # says the folder holds demo-data's own output, which a rerun may replace
PER_CLASS_RANGE = (4, 5000)  # fewer leaves some demo sets empty
SIZE_RANGE = (32, 2048)  # JPEG 2000 cannot encode the DICOM set below 32 px


def _claim_folder(out: Path) -> None:
    """Make `out` ours: absent or empty, or holding only demo-data's marked output; else a one-line error."""
    if out.exists() and not out.is_dir():
        raise MedcoreError(f"{out}: exists and is not a folder; demo-data writes into a folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        foreign = [name for name in entries if name not in (*DEMO_SETS, MARKER)]
        if entries and (MARKER not in entries or foreign):
            shown = ", ".join(foreign[:3]) or ", ".join(entries[:3])
            raise MedcoreError(
                f"{out}: not empty and not written by medcore demo-data (holds {shown}); name a new or empty folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by medcore demo-data; a rerun may replace this folder's demo sets\n")


@dataclass(frozen=True)
class _Sample:
    relpath: str
    positive: bool


def _write(root: Path, samples: list[_Sample], rng: np.random.Generator, size: int) -> None:
    for sample in samples:
        image = phantom(rng, size, sample.positive)
        if sample.relpath.endswith((".jpg", ".jpeg")) and rng.random() < 0.3:
            image = np.dstack([image] * 3)  # some real files are RGB copies of grayscale films
        atomic_write_bytes(root / sample.relpath, _encode(image, Path(sample.relpath).suffix))


def write_demo_data(
    out: Path, per_class: int = 40, size: int = 64, seed: int = 7, dicom_per_class: int | None = None
) -> dict[str, int]:
    """Write five small datasets under `out` matching `conditions.yaml`; return images per dataset.

    - pneumonia: `train|test/NORMAL|PNEUMONIA/personN_*.jpeg` (folders with splits, patient ids)
    - knee_oa: `train|val|test/0..4/*.jpg` (folders with all splits, five grades)
    - knee_osteoporosis: `normal|osteopenia|osteoporosis/*.dcm` (folders, no splits, an excluded class), as
      12-bit DICOM with patient and study ids in the headers, some MONOCHROME1, one JPEG 2000 compressed;
      `dicom_per_class` films per class (default `per_class`). `make demo` makes it a small PACS export on
      purpose, its deliberate problem: two films a patient and no split of its own, so the test split made
      from it holds fewer than evaluation.min_per_class patients of each class; its tier is "insufficient",
      it gets no champion and the report says to add data. The other four sets are sized to earn a tier.
    - cardiomegaly: `labels.csv` with float-coded labels `1.0`/`0.0` and a train/test split column
    - limb: `labels.csv` with string labels, patient and study ids, a train/valid split column
    """
    out = Path(out)
    dicom_per_class = per_class if dicom_per_class is None else dicom_per_class
    for name, value, (low, high) in (
        ("--per-class", per_class, PER_CLASS_RANGE),
        ("--dicom-per-class", dicom_per_class, PER_CLASS_RANGE),
        ("--size", size, SIZE_RANGE),
    ):
        if not low <= value <= high:
            raise MedcoreError(f"{name} must be between {low} and {high}, got {value}")
    _claim_folder(out)
    rng = np.random.default_rng(seed)
    written: dict[str, int] = {}

    written["pneumonia"] = _write_pneumonia(out / "pneumonia", per_class, rng, size)
    written["knee_oa"] = _write_knee_oa(out / "knee_oa", per_class, rng, size)
    written["knee_osteoporosis"] = _write_dicom_set(out / "knee_osteoporosis", dicom_per_class, rng, size)
    written["cardiomegaly"] = _write_cardiomegaly(out / "cardiomegaly", per_class, rng, size)
    written["limb"] = _write_limb(out / "limb", per_class, rng, size)
    return written


def _write_pneumonia(root: Path, per_class: int, rng: np.random.Generator, size: int) -> int:
    """Folders with train/test splits and patient ids in the file names; return the images written."""
    # Test shares are large on purpose: a quality tier needs evaluation.min_per_class (10) test patients of each
    # class, and with ten models to train the demo would rather spend its images on judging than on training.
    samples: list[_Sample] = []
    for split, share in (("train", 0.75), ("test", 0.25)):
        for label, positive in (("NORMAL", False), ("PNEUMONIA", True)):
            for i in range(int(per_class * share)):
                patient = f"person{len(samples) // 2}"
                kind = "bacteria" if positive else "normal"
                samples.append(_Sample(f"{split}/{label}/{patient}_{kind}_{i}.jpeg", positive))
    _write(root, samples, rng, size)
    return len(samples)


def _write_knee_oa(root: Path, per_class: int, rng: np.random.Generator, size: int) -> int:
    """Folders with every split and five grades (0-1 negative, 2-4 positive); return the images written."""
    samples: list[_Sample] = []
    patient = 9000000
    for split, share in (("train", 0.3), ("val", 0.35), ("test", 0.35)):
        for grade in range(5):
            # Grades 0-1 are the negatives and 2-4 the positives: each side gets `per_class * share` images.
            for i in range(max(2, round(per_class * share / (2 if grade < 2 else 3)))):
                patient += i % 2 == 0  # both knees of a patient, never across two splits (OAI-style ids)
                samples.append(_Sample(f"{split}/{grade}/{patient:07d}{'LR'[i % 2]}.jpg", grade >= 2))
    _write(root, samples, rng, size)
    return len(samples)


def _write_cardiomegaly(root: Path, per_class: int, rng: np.random.Generator, size: int) -> int:
    """A CSV manifest with float-coded labels and a train/test split column; return the images written."""
    rows: list[dict[str, Any]] = []
    samples: list[_Sample] = []
    for split, share in (("train", 0.65), ("test", 0.35)):
        for label, positive in (("true", True), ("false", False)):
            for i in range(int(per_class * share)):
                relpath = f"images/{split}/{label}/{i + 1}.jpg"  # same names in every folder, as in the real set
                samples.append(_Sample(relpath, positive))
                rows.append({"image": relpath, "cardiomegaly": 1.0 if positive else 0.0, "split": split})
    _write(root, samples, rng, size)
    _write_csv(root / "labels.csv", rows)
    return len(samples)


def _write_limb(root: Path, per_class: int, rng: np.random.Generator, size: int) -> int:
    """A CSV manifest with string labels, patient and study ids, a train/valid split; return the images written."""
    rows: list[dict[str, Any]] = []
    samples: list[_Sample] = []
    for split, share in (("train", 0.7), ("valid", 0.3)):
        for finding, positive in (("positive", True), ("negative", False)):
            # Two films a study and one study a patient: `per_class` studies, so the test split made from
            # train (MURA ships none) can hold evaluation.min_per_class patients of each class.
            for _study in range(int(per_class * share)):
                patient = f"patient{len(rows) // 2 + 1:05d}"
                study_id = f"{patient}/study1_{finding}"
                for image in (1, 2):
                    relpath = f"images/{split}/{study_id}/image{image}.png"
                    samples.append(_Sample(relpath, positive))
                    rows.append(
                        {
                            "image": relpath,
                            "finding": finding,
                            "study_id": study_id,
                            "patient_id": patient,
                            "split": split,
                            "body_part": "XR_HUMERUS",
                        }
                    )
    _write(root, samples, rng, size)
    _write_csv(root / "labels.csv", rows)
    return len(samples)


def _write_csv(path: Path, rows: list[dict]) -> None:
    table = pd.DataFrame(rows)
    # Written as pandas writes a float column, which is what broke the seed's loader.
    atomic_write_text(path, table.to_csv(index=False, float_format="%.1f"))
