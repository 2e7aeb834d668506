"""The row and file checks: labels, paths, named splits, unreadable files, image and DICOM properties.

Each check records findings under its code's policy (`_Validation.flag`) and returns the rows still in play.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from medcore.config import CHECKS, Condition, ValidationSettings
from medcore.data.limits import MAX_DECODED_BYTES, MAX_FILE_BYTES
from medcore.data.splits import SPLITS, classify_labels
from medcore.data.validation.scanning import MIN_SIDE, scan_files
from medcore.data.validation.types import _SEVERITY_OF_POLICY, FileScan, Severity, ValidationResult, _printable


def _values(series: pd.Series, limit: int = 5) -> str:
    counts = series.astype(str).value_counts()
    shown = ", ".join(f"{_printable(v, 40)!r} ({n})" for v, n in counts.head(limit).items())
    return shown + (f", … {len(counts) - limit} more" if len(counts) > limit else "")


def _split_counts(rows: pd.DataFrame) -> str:
    counts = rows["split"].value_counts().reindex(list(SPLITS)).dropna().astype(int)
    return ", ".join(f"{split} {n}" for split, n in counts.items())


# --- the checks ---------------------------------------------------------------------------------


class _Validation:
    """The working state of one validation: the rows still in play and the policy that judges them."""

    def __init__(self, result: ValidationResult, settings: ValidationSettings, condition: Condition):
        self.result, self.settings, self.condition = result, settings, condition
        self.dropped = 0
        self.dicom_groups = False  # set when DICOM headers supplied group ids

    def flag(
        self,
        code: str,
        rows: pd.DataFrame,
        message: str,
        frame: pd.DataFrame,
        drop: pd.Index | None = None,
        how: str = "",
    ) -> pd.DataFrame:
        """Record `rows` under `code`'s policy and return `frame` without whatever the policy removes.

        Rows that cannot be trained on leave `frame` whatever the policy (under `error` the run fails
        anyway); other rows leave only under `drop`, and then only `drop` (default: all of `rows`),
        which `how` describes in the message.
        """
        if rows.empty:
            return frame
        rule = CHECKS[code]
        policy = self.settings.policy.get(code, rule.default)
        removable = rows.index if drop is None else drop
        unusable = bool(rule.allowed) and "warn" not in rule.allowed
        removed = removable if policy == "drop" or unusable else removable[:0]
        dropped = rows.loc[rows.index.intersection(removed), "where"] if policy == "drop" else rows["where"][:0]
        self.dropped += len(dropped)
        action = {
            "drop": f"dropped {len(dropped)}" + (f" ({how})" if how else ""),
            "warn": "kept",
            "info": "",
            "error": f"policy error: set validation_policy.{code} to drop"
            + (" or warn" if "warn" in rule.allowed else "")
            + " to continue",
        }[policy]
        text = f"{message}; {action}" if action else message
        self.result.add(code, _SEVERITY_OF_POLICY[policy], text, rows, dropped_rows=dropped, policy=policy)
        return frame.drop(index=removed)

    def error(self, code: str, message: str) -> None:
        self.result.add(code, Severity.ERROR, message, policy="error")

    def note(self, code: str, message: str) -> None:
        """A finding about the dataset as a whole (no rows), under the code's policy."""
        policy = self.settings.policy.get(code, CHECKS[code].default)
        self.result.add(code, _SEVERITY_OF_POLICY[policy], message, policy=policy)


def _check_labels(v: _Validation, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Flag unusable and float-coded labels; return (task rows, rows of excluded classes)."""
    kinds = classify_labels(frame["raw_label"], v.condition)
    for kind, code, what in (
        ("missing", "label_missing", "have no label (blank, NaN or null)"),
        ("fractional", "label_fractional", "have a fractional label"),
        ("unknown", "label_unknown", "have a label neither positive, negative nor excluded"),
    ):
        rows = frame[kinds[frame.index] == kind]
        if not rows.empty:
            values = f": {_values(rows['raw_label'])}" if kind != "missing" else ""
            frame = v.flag(code, rows, f"{len(rows)} rows {what}{values}", frame)
    coded = frame[kinds[frame.index] == "float_coded"]
    if not coded.empty:
        frame = v.flag(
            "label_float_coded",
            coded,
            f"{len(coded)} labels are float-coded integers ({_values(coded['raw_label'], 3)}); cast safely to integers",
            frame,
        )
    excluded = frame[kinds[frame.index] == "excluded"]
    if not excluded.empty:
        v.flag(
            "label_excluded",
            excluded,
            f"{len(excluded)} images of excluded classes ({_values(excluded['raw_label'])}) are left out of the task",
            excluded,
        )
    return frame.drop(index=excluded.index), excluded


def _check_paths(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    for problem, code, what in (
        ("invalid", "path_invalid", "are empty or not usable as file names"),
        ("outside", "path_outside_dataset", "point outside the dataset folder"),
    ):
        rows = frame[frame["path_problem"] == problem]
        frame = v.flag(code, rows, f"{len(rows)} manifest paths {what}; never opened", frame)
    return frame


def _check_splits_named(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    """Split values that are not train/val/test (e.g. `holdout`) must not silently become training data."""
    rows = frame[(frame["source_split"] != "") & (frame["split"] == "")]
    return v.flag(
        "split_unknown",
        rows,
        f"{len(rows)} rows have a split that is not train/val/test "
        f"({_values(rows['source_split'])}); under warn they are split like unsplit rows",
        frame,
    )


_FILE_PROBLEMS = {
    "file_missing": "image files are missing",
    "file_unreadable": "files cannot be read (not a regular file, or an I/O error)",
    "image_empty": "files are empty (zero bytes)",
    "image_truncated": "images are truncated or have damaged coded data (cut short, zeroed bytes)",
    "image_corrupt": "images have a valid header but do not decode",
    "image_not_an_image": "files are not images in any known format",
    "image_format_unsupported": "files are images the training loader cannot read",
    "image_too_large": f"images are too large to decode safely (over {MAX_DECODED_BYTES // 2**20} MiB decoded or "
    f"{MAX_FILE_BYTES // 2**20} MiB)",
    "dicom_pixel_data_missing": "DICOM files hold no pixel data (e.g. structured reports, presentation states)",
    "dicom_transfer_syntax_unsupported": "DICOM files use a transfer syntax no installed decoder reads",
}


def _scan(
    v: _Validation,
    frame: pd.DataFrame,
    excluded: pd.DataFrame,
    workers: int | None,
    key: Callable[[], bytes] | bytes = b"",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every file once; flag unusable ones; return (task rows with scan columns, excluded rows hashed)."""
    excluded = excluded[excluded["path_problem"] == ""]
    # Excluded classes are hashed, not decoded: they matter only as copies that contradict a task label.
    wanted = dict.fromkeys(excluded["path"], False)
    wanted.update(dict.fromkeys(frame["path"], True))
    scans = dict(zip(wanted, scan_files(wanted, wanted.values(), workers, key)))
    names = [f.name for f in dataclasses.fields(FileScan)]
    frame = frame.assign(**{f"scan_{name}": [getattr(scans[p], name) for p in frame["path"]] for name in names})
    frame = frame.rename(columns={"scan_sha256": "sha256"})
    for code, what in _FILE_PROBLEMS.items():
        rows = frame[frame["scan_status"] == code]
        if not rows.empty:
            detail = _values(rows["scan_detail"], 3) if rows["scan_detail"].ne("").any() else ""
            if code == "dicom_transfer_syntax_unsupported":  # the whole line: it names the package to install
                detail = "; ".join(pd.unique(rows["scan_detail"])[:3])
            frame = v.flag(code, rows, f"{len(rows)} {what}" + (f" ({detail})" if detail else ""), frame)
    excluded = excluded.assign(sha256=[scans[p].sha256 if scans[p].status == "ok" else "" for p in excluded["path"]])
    return frame, excluded[excluded["sha256"] != ""]


def _image_stats(frame: pd.DataFrame) -> dict[str, Any]:
    heights, widths = frame["scan_height"].to_numpy(), frame["scan_width"].to_numpy()
    encodings = pd.Series([e for row in frame["scan_encodings"] for e in row], dtype=object).value_counts()
    return {
        "images": len(frame),
        "min_height": int(heights.min()),
        "median_height": float(np.median(heights)),
        "max_height": int(heights.max()),
        "min_width": int(widths.min()),
        "median_width": float(np.median(widths)),
        "max_width": int(widths.max()),
        "grayscale": int((frame["scan_channels"] == 1).sum()),
        "color": int((frame["scan_channels"] >= 3).sum()),
        "channels": {str(k): int(n) for k, n in frame["scan_channels"].value_counts().sort_index().items()},
        "bit_depth": {str(k): int(n) for k, n in frame["scan_bit_depth"].value_counts().sort_index().items()},
        "encodings": {str(k): int(n) for k, n in encodings.items()},
        "mean_intensity": float(frame["scan_mean"].mean()),
    }


def _check_images(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    """Describe the decoded images; flag tiny and blank ones; count unusual encodings."""
    v.result.image_stats = _image_stats(frame)
    unusual = frame[frame["scan_encodings"].map(bool)]
    if not unusual.empty:
        v.flag(
            "image_encoding_unusual",
            unusual,
            f"{len(unusual)} images have unusual but valid encodings ("
            + ", ".join(f"{k}: {n}" for k, n in v.result.image_stats["encodings"].items())
            + "); read as 8-bit, 3-channel in training",
            frame,
        )
    small = frame[np.minimum(frame["scan_height"], frame["scan_width"]) < MIN_SIDE]
    frame = v.flag("image_too_small", small, f"{len(small)} images have a side under {MIN_SIDE} px", frame)
    blank = frame[frame["scan_blank"]]
    return v.flag("image_blank", blank, f"{len(blank)} images are blank (one flat intensity)", frame)


def _dicom_facts(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame["scan_dicom"].map(lambda info: getattr(info, name))


def _check_dicom(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    """Describe the DICOM files; flag those that are no plain radiograph; take groups from their headers."""
    from medcore.data.dicom import MONOCHROME, RADIOGRAPH_MODALITIES

    dicom = frame[frame["scan_dicom"].notna()]
    if dicom.empty:
        return frame
    _describe_dicom(v, dicom)
    checks = (
        (
            "dicom_modality_not_radiograph",
            lambda d: ~_dicom_facts(d, "modality").isin(RADIOGRAPH_MODALITIES),
            "are not radiographs (modality {})",
            "modality",
        ),
        (
            "dicom_multiframe",
            lambda d: _dicom_facts(d, "frames") > 1,
            "are multi-frame ({} frames); only the first frame would be used",
            "frames",
        ),
        (
            "dicom_photometric_unsupported",
            lambda d: ~_dicom_facts(d, "photometric").isin(MONOCHROME),
            "are not MONOCHROME1/2 (photometric interpretation {}); kept ones are read as luminance",
            "photometric",
        ),
        (
            "dicom_burned_in_annotation",
            lambda d: _dicom_facts(d, "burned_in_annotation"),
            "declare Burned In Annotation YES: text in the pixels may identify the patient and shows in Grad-CAM "
            "overlays{}",
            None,
        ),
    )
    for code, select, what, fact in checks:
        dicom = frame[frame["scan_dicom"].notna()]
        rows = dicom[select(dicom).to_numpy(dtype=bool)]
        if not rows.empty:
            detail = _values(_dicom_facts(rows, fact).replace("", "(blank)")) if fact else ""
            frame = v.flag(code, rows, f"{len(rows)} DICOM files " + what.format(detail), frame)
    frame = _check_dicom_mixed(v, frame)
    if not (v.condition.group_column or v.condition.group_pattern):
        groups = frame["scan_dicom"].map(lambda info: info.group if info is not None else "")
        known = groups != ""
        frame = frame.assign(group=frame["group"].where(~known, groups), group_known=frame["group_known"] | known)
        v.dicom_groups = bool(known.any())
    return frame


def _describe_dicom(v: _Validation, dicom: pd.DataFrame) -> None:
    """The `dicom_summary` finding: bit depths, photometric interpretations, windows and compression."""
    compressed = dicom[_dicom_facts(dicom, "compressed")]
    v.result.add(
        "dicom_summary",
        Severity.INFO,
        f"{len(dicom)} DICOM files: bits stored "
        f"{_values(_dicom_facts(dicom, 'bits_stored'))}; "
        f"photometric {_values(_dicom_facts(dicom, 'photometric'))}"
        f"; intensity window from {_values(_dicom_facts(dicom, 'windowing'))}; "
        + (
            f"{len(compressed)} compressed ("
            + ", ".join(
                f"{name}: {n}" for name, n in _dicom_facts(compressed, "transfer_syntax").value_counts().items()
            )
            + ")"
            if len(compressed)
            else "none compressed"
        ),
        policy="info",
    )


def _check_dicom_mixed(v: _Validation, frame: pd.DataFrame) -> pd.DataFrame:
    """Flag view positions and body parts that differ within the condition, listing the uncommon ones."""
    for code, fact, what in (
        ("dicom_mixed_views", "view_position", "view positions"),
        ("dicom_mixed_body_parts", "body_part", "body parts"),
    ):
        dicom = frame[frame["scan_dicom"].notna()]
        values = _dicom_facts(dicom, fact) if not dicom.empty else pd.Series(dtype=str)
        named = values[values != ""]
        if named.nunique() > 1:
            common = named.value_counts().index[0]
            rows = dicom[(values != common).to_numpy()]
            frame = v.flag(
                code,
                rows,
                f"{what} differ within the condition ({_values(values.replace('', '(blank)'))})"
                f"; the {len(rows)} images not {common!r} are listed",
                frame,
            )
    return frame
