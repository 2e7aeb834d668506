"""What the shortcut probes and the randomisation check add to the Grad-CAM stage, as a ratio measured in one run.

Goal (issue 37): the probes add at most 20 % to a model's Grad-CAM stage. This runs the stage itself
(`medcore.assess.gradcam.explain_model`, with the shipped `gradcam:` settings of conditions.yaml) once on a
DenseNet121 at the profile's size, and reads from its gradcam.json the stage's wall time and the
probes' share of it; the ratio is probes / (stage - probes): what the probes add to the stage as it
was before them. Images are real pneumonia test films when $MEDCORE_DATA_ROOT (default
../shared/datasets) has them, else synthetic phantoms. The model is untrained (no trained model
is reachable here): time does not depend on what the weights learnt, so the ratio holds; the
probes' verdicts on it mean nothing and are not reported. Writes bench/results/<name>.json.

    nice -n 10 .venv/bin/python bench/probes_overhead.py [--size 128] [--test-images 624] [--name probes_overhead]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import ROOT, data_root_or_none, write_result


def _test_files(count: int, size: int, tmp: Path) -> tuple[list[tuple[Path, int]], str]:
    root = data_root_or_none()
    if root is not None:
        files = [(p, int(p.parent.name == "PNEUMONIA")) for p in sorted((root / "pneumonia" / "test").glob("*/*"))]
        if len(files) >= count:
            step = len(files) / count
            return [files[int(i * step)] for i in range(count)], "real pneumonia test images"
    import cv2
    import numpy as np

    from medcore.data.synthetic import phantom

    rng, files = np.random.default_rng(0), []
    for i in range(count):
        path = tmp / "phantoms" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), phantom(rng, size, bool(i % 2)))
        files.append((path, i % 2))
    return files, "synthetic phantoms"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image size (conditions.yaml's standard profile: 128)")
    parser.add_argument("--test-images", type=int, default=624, help="test images (pneumonia's test split: 624)")
    parser.add_argument("--name", default="probes_overhead")
    return parser


def _untrained_model(files: list[tuple[Path, int]], size: int, tmp: Path):
    """Save an untrained DenseNet121 and its test predictions where the Grad-CAM stage reads them."""
    import numpy as np
    import pandas as pd

    from medcore.config import Profile
    from medcore.data.datasets import load_images
    from medcore.layout import ModelLayout
    from medcore.model.training import build_model

    paths = ModelLayout(tmp / "pneumonia" / "standard", "pneumonia", "standard")
    paths.root.mkdir(parents=True)
    model = build_model(Profile("bench", image_size=size), seed=0)
    model.save(paths.model)
    images = load_images([str(p) for p, _ in files], size)
    logits = model.predict(images, batch_size=32, verbose=0).reshape(-1)
    frame = pd.DataFrame(
        {
            "relpath": [p.name for p, _ in files],
            "path": [str(p) for p, _ in files],
            "label": [label for _, label in files],
            "logit": logits,
        }
    )
    frame["probability"] = 1 / (1 + np.exp(-logits.astype(np.float64)))
    frame["predicted"] = (frame["probability"] >= frame["probability"].median()).astype(int)
    frame.to_csv(paths.predictions_csv, index=False)
    return paths


def _result(args: argparse.Namespace, settings, source: str, record: dict, wall: float) -> dict:
    import dataclasses

    probes = record["probes"]
    stage, added = record["stage_seconds"], probes["seconds"]
    return {
        "source": source,
        "image_size": args.size,
        "test_images": args.test_images,
        "settings": {
            "deletion_images": settings.deletion_images,
            "deletion_steps": settings.deletion_steps,
            "deletion_random_maps": settings.deletion_random_maps,
            "probes": dataclasses.asdict(settings.probes),
        },
        "stage_seconds": stage,
        "wall_seconds": wall,
        "probes_seconds": added,
        "probes_seconds_by_probe": probes["seconds_by_probe"],
        "stage_without_probes_seconds": stage - added,
        "ratio": added / (stage - added),
        "goal": 0.20,
    }


def main() -> None:
    args = _parser().parse_args()

    from medcore.assess.gradcam import explain_model
    from medcore.config import load_config
    from medcore.jsonio import read_json

    settings = load_config(ROOT / "conditions.yaml").gradcam
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files, source = _test_files(args.test_images, args.size, tmp)
        paths = _untrained_model(files, args.size, tmp)
        start = time.perf_counter()
        explain_model(paths, settings, "pneumonia/bench")
        wall = time.perf_counter() - start
        record = read_json(paths.gradcam_json)
    result = _result(args, settings, source, record, wall)
    path = write_result(args.name, result)
    stage, added = result["stage_seconds"], result["probes_seconds"]
    print(
        f"{path}: stage {stage:.1f} s, probes {added:.1f} s ({result['probes_seconds_by_probe']}), "
        f"ratio {result['ratio']:.3f}"
    )
    print(f"ratio={result['ratio']:.3f}")


if __name__ == "__main__":
    main()
