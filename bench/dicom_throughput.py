"""Training on DICOM against training on JPEG: the same images, the same tf.data path, in one run.

Usage: .venv/bin/python bench/dicom_throughput.py [--images 96] [--size 64] [--epochs 4]

Each image is written twice: as an 8-bit JPEG and as a 12-bit DICOM of the same pixels (every
third MONOCHROME1, a window on each), from the real pneumonia set when it is there, else from
phantoms. Both sets go through validation, then one DenseNet121 per format trains on
`medcore.data.datasets.make_dataset` (the path training uses), the two alternating epoch by epoch, so
each pair of epochs runs under the same (shared, noisy) CPU load. Reported:
  - input only: images/s of the tf.data pipeline in its first pass (decode + resize) and second
    pass (from the cache), per format
  - training: images/s of the first epoch (decode + graph trace) and after it (median)
The last line is `ratio=<DICOM / JPEG training images/s after the first epoch>` over the paired
epochs (each pair's ratio is in the JSON). Raw figures: bench/results/dicom_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _sources(images: int, seed: int = 0) -> list[tuple[object, bool]]:
    """(8-bit grayscale image, positive) pairs: real pneumonia films if present, else phantoms."""
    import cv2
    import numpy as np

    from bench.common import data_root_or_none
    from medcore.data.synthetic import phantom

    root = data_root_or_none()
    if root is not None:
        picked = []
        for label, positive in (("PNEUMONIA", True), ("NORMAL", False)):
            files = sorted((root / "pneumonia" / "train" / label).glob("*.jpeg"))[: images // 2]
            picked += [(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), positive) for f in files]
        return picked
    print("real data not found; using phantoms")
    rng = np.random.default_rng(seed)
    return [(phantom(rng, 224, i % 2 == 0), i % 2 == 0) for i in range(images)]


def _write_sets(root: Path, images: int) -> None:
    """The same pixels twice: `jpeg/<class>/<i>.jpg` and `dicom/<class>/<i>.dcm` (12-bit)."""
    import cv2
    import numpy as np

    from medcore.data.synthetic import dicom_bytes

    for i, (image, positive) in enumerate(_sources(images)):
        label = "pos" if positive else "neg"
        for kind in ("jpeg", "dicom"):
            (root / kind / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "jpeg" / label / f"{i}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        values = image.astype(np.float64) * 16 + 8
        (root / "dicom" / label / f"{i}.dcm").write_bytes(
            dicom_bytes(
                values,
                patient_id=f"bench{i}",
                study_uid=f"1.2.3.{i}",
                window=(2048, 4096),
                monochrome1=i % 3 == 0,
                uid_seed=str(i),
            )
        )


def _input_rates(frame, size: int) -> dict[str, float]:
    """Images/s of the tf.data pipeline alone: first pass (decode + resize) and second (cache)."""
    import numpy as np

    from medcore.data.datasets import image_dataset

    data = image_dataset(
        frame["path"].to_numpy(str), frame["label"].to_numpy(np.float32), size, 32, training=True, seed=0
    )
    seconds = []
    for _ in range(21):  # a cached pass takes milliseconds: the fastest of 20 is what the pipeline can do
        start = time.perf_counter()
        n = sum(int(x.shape[0]) for x, _ in data)
        seconds.append(time.perf_counter() - start)
    return {"first_pass": n / seconds[0], "cached_pass": n / min(seconds[1:])}


def _paired_epochs(config, profile, frames: dict, epochs: int) -> dict[str, list[float]]:
    """Train one model per format through make_dataset, alternating epoch by epoch, so both see the same load."""
    import keras

    from medcore.data.datasets import make_dataset
    from medcore.model.training import build_model, configure_threads

    configure_threads(profile)
    keras.utils.set_random_seed(config.seed)
    runs = {
        kind: (build_model(profile, config.seed), make_dataset(frame, profile, training=True, seed=config.seed))
        for kind, frame in frames.items()
    }
    seconds: dict[str, list[float]] = {kind: [] for kind in frames}
    for _ in range(epochs):
        for kind, (model, data) in runs.items():
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            seconds[kind].append(time.perf_counter() - start)
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192, help="training images per format")
    parser.add_argument("--size", type=int, default=64, help="training image size")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per format, the first one decodes")
    parser.add_argument(
        "--execution",
        choices=("eager", "graph"),
        default="eager",
        help="eager skips two ~3 min graph traces on a loaded 2-core machine; graph is what nights use",
    )
    return parser


def _measure(args: argparse.Namespace, results: dict) -> dict[str, list[float]]:
    """Write both sets, measure each format's input rates into `results`, then train both: epoch seconds."""
    from medcore.config import load_config
    from medcore.data.validation import validate_condition

    with tempfile.TemporaryDirectory(prefix="medcore-dicom-bench-") as tmp:
        tmp = Path(tmp)
        _write_sets(tmp / "data", args.images)
        config_path = tmp / "bench.yaml"
        config_path.write_text(
            f"data_root: {tmp / 'data'}\nruns_root: {tmp / 'runs'}\nregistry: {{root: {tmp / 'registry'}}}\n"
            "conditions:\n"
            "  jpeg: {dataset: jpeg, layout: folders, positive: [pos], negative: [neg]}\n"
            "  dicom: {dataset: dicom, layout: folders, positive: [pos], negative: [neg]}\n"
            f"profiles:\n  bench: {{image_size: {args.size}, batch_size: 32, execution: {args.execution}}}\n"
        )
        for name in ("MEDCORE_DATA_ROOT", "MEDCORE_RUNS_ROOT", "MEDCORE_REGISTRY_ROOT"):
            os.environ.pop(name, None)
        config = load_config(config_path)
        frames = {}
        for kind in ("jpeg", "dicom"):
            result = validate_condition(config, config.conditions[kind])
            assert result.ok, result.summary()
            frames[kind] = result.manifest.sort_values("relpath").reset_index(drop=True)  # every image trains
            results["formats"][kind] = {
                "images": len(frames[kind]),
                "input_images_per_second": _input_rates(frames[kind], args.size),
            }
        return _paired_epochs(config, config.profiles["bench"], frames, args.epochs)


def _format_rows(results: dict, seconds: dict[str, list[float]]) -> None:
    for kind, row in results["formats"].items():
        row["epoch_seconds"] = seconds[kind]
        row["first_epoch_images_per_second"] = row["images"] / seconds[kind][0]
        row["steady_images_per_second"] = row["images"] / statistics.median(seconds[kind][1:])
        rates = row["input_images_per_second"]
        print(
            f"{kind}: input {rates['first_pass']:.0f} img/s first pass, {rates['cached_pass']:.0f} cached; training "
            f"{row['first_epoch_images_per_second']:.1f} img/s first epoch (decode + trace), "
            f"{row['steady_images_per_second']:.1f} after it (epochs: "
            + ", ".join(f"{s:.1f}" for s in seconds[kind])
            + " s)"
        )


def main() -> int:
    args = _parser().parse_args()

    from bench.common import RESULTS, machine
    from medcore.jsonio import write_json

    results: dict = {
        "machine": machine(),
        "images": args.images,
        "size": args.size,
        "epochs": args.epochs,
        "execution": args.execution,
        "formats": {},
    }
    seconds = _measure(args, results)
    _format_rows(results, seconds)
    # Epoch k of both formats ran back to back, so their ratio is taken under the same load.
    paired = [j / d for j, d in zip(seconds["jpeg"][1:], seconds["dicom"][1:])]
    results["paired_epoch_ratios"] = paired
    results["ratio"] = sum(seconds["jpeg"][1:]) / sum(seconds["dicom"][1:])
    inputs = {kind: results["formats"][kind]["input_images_per_second"] for kind in ("jpeg", "dicom")}
    results["input_first_pass_ratio"] = inputs["dicom"]["first_pass"] / inputs["jpeg"]["first_pass"]
    results["input_cached_ratio"] = inputs["dicom"]["cached_pass"] / inputs["jpeg"]["cached_pass"]
    print(f"after the first epoch the input pipeline runs at {results['input_cached_ratio']:.2f}x JPEG's images/s")
    out = write_json(RESULTS / "dicom_throughput.json", results)
    print(
        f"DICOM first-pass decode runs at {results['input_first_pass_ratio']:.2f}x JPEG's images/s; raw results: {out}"
    )
    print(f"ratio={results['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
