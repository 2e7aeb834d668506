"""Inference and Grad-CAM speed of the production model, per image size, after the model is built.

Budget (issue 5): Grad-CAM of 32 images at 224 px under 15 s on the 2-core CI machine, first call
included: it carries the `tf.function` trace every nightly gradcam stage pays once per model.
Inference goes through `medcore.assess.evaluation.predict_files`, the path `medcore predict` and the
evaluate stage use: files decoded and resized as in training, batched through the model. Files are
real pneumonia test images when $MEDCORE_DATA_ROOT (default ../shared/datasets) has them, else
synthetic phantoms. Not a test: run it by hand or from `make bench`; raw figures go to
bench/results/stages_speed.json. The last line is `seconds=<Grad-CAM first call at the largest size>`.

    .venv/bin/python bench/gradcam_speed.py [--sizes 96 224] [--images 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import data_root_or_none, write_result


def _files(count: int, tmp: Path) -> tuple[list[Path], str]:
    root = data_root_or_none()
    if root is not None:
        files = sorted((root / "pneumonia" / "test").glob("*/*.jpeg"))[::3][:count]
        if len(files) == count:
            return files, "real pneumonia test images"
    from medcore.data.synthetic import write_demo_data

    write_demo_data(tmp, per_class=count, size=256)
    return sorted(tmp.rglob("*.png"))[:count], "synthetic phantoms"


def _measure(size: int, files: list[Path], images: int, repeats: int) -> dict:
    import numpy as np

    from medcore.assess.evaluation import predict_files
    from medcore.assess.gradcam import GradCam
    from medcore.config import Profile
    from medcore.model.training import build_model

    model = build_model(Profile("bench", image_size=size), seed=0)  # weights=None: none are reachable here
    start = time.perf_counter()
    predict_files(model, files)
    inference_first = time.perf_counter() - start
    steady = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_files(model, files)
        steady.append(time.perf_counter() - start)
    batch = np.random.default_rng(0).uniform(0, 255, (images, size, size, 3)).astype("float32")
    start = time.perf_counter()
    gradcam = GradCam(model, "relu", batch_size=32)
    gradcam.heatmaps(batch)
    gradcam_first = time.perf_counter() - start
    gradcam_steady = []
    for _ in range(repeats):
        start = time.perf_counter()
        gradcam.heatmaps(batch)
        gradcam_steady.append(time.perf_counter() - start)
    return {
        "inference_files": len(files),
        "inference_first_call_seconds": round(inference_first, 2),
        "inference_images_per_second": round(len(files) / statistics.median(steady), 1),
        "gradcam_images": images,
        "gradcam_first_call_seconds": round(gradcam_first, 2),
        "gradcam_images_per_second": round(images / statistics.median(gradcam_steady), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    parser.add_argument("--images", type=int, default=32, help="Grad-CAM batch")
    parser.add_argument("--files", type=int, default=128, help="files for inference")
    parser.add_argument("--repeats", type=int, default=3, help="steady-state calls after the first")
    args = parser.parse_args()
    threads = os.environ.get("MEDCORE_THREADS")  # TF's default pools otherwise, as the stages use
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    results = {}
    with tempfile.TemporaryDirectory(prefix="medcore-bench-") as tmp:
        files, source = _files(args.files, Path(tmp))
        for size in args.sizes:
            row = results[str(size)] = _measure(size, files, args.images, args.repeats)
            print(
                f"{size} px: inference {row['inference_images_per_second']} img/s ({source}); Grad-CAM first call "
                f"{row['gradcam_first_call_seconds']} s for {args.images} images, then "
                f"{row['gradcam_images_per_second']} img/s",
                flush=True,
            )
    path = write_result(
        "stages_speed", {"sizes": results, "inference_source": source, "threads": threads or "TensorFlow default"}
    )
    print(f"raw figures: {path}")
    largest = results[str(max(args.sizes))]["gradcam_first_call_seconds"]
    print(f"budget 15 s for the Grad-CAM first call at {max(args.sizes)} px: {'OK' if largest < 15 else 'OVER'}")
    print(f"seconds={largest:.2f}")


if __name__ == "__main__":
    main()
