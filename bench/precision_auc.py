"""Does the faster precision cost accuracy? The same training in float32 and in another mode, scored on test.

Usage: .venv/bin/python bench/precision_auc.py [--size 64] [--train 800] [--test 400] [--epochs 4]
       [--mode mixed_bfloat16] [--fused]

Both runs use `medcore.model.training.train_model` on the same real pneumonia images (a seeded sample of
the train split, the val split for selection), the same seed and epochs; only the precision (and,
with --fused, the fused batch norm) differs. Each model then scores the same sample of the test
split; the record holds both ROC AUCs, their paired difference and its 95 % bootstrap interval
(images resampled together for both models). Writes bench/results/precision_auc.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--mode", default="mixed_bfloat16")
    parser.add_argument("--fused", action="store_true", help="the other run also uses the fused batch norm")
    parser.add_argument(
        "--data-root", default=os.environ.get("MEDCORE_DATA_ROOT", str(ROOT.parent / "shared" / "datasets"))
    )
    return parser


def _config_and_samples(args: argparse.Namespace, tmp: Path):
    """The config with a `bench` profile, and the seeded train, val and test samples of pneumonia images."""
    from medcore.config import load_config
    from medcore.data.validation import validate_condition

    config_path = tmp / "auc.yaml"
    config_path.write_text(
        f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {Path(args.data_root).resolve()}\nruns_root: {tmp / 'runs'}\n"
        f"profiles:\n  bench: {{image_size: {args.size}, epochs: {args.epochs}, patience: 99, batch_size: 32}}\n"
    )
    os.environ.pop("MEDCORE_DATA_ROOT", None)
    config = load_config(config_path)
    frame = validate_condition(config, config.conditions["pneumonia"]).manifest
    parts = [
        frame[frame["split"] == s].sample(n=min(n, int((frame["split"] == s).sum())), random_state=0)
        for s, n in (("train", args.train), ("val", args.val), ("test", args.test))
    ]
    return config, parts


def _train_and_score(config, name: str, profile, split, test, tmp: Path, epochs: int, labels):
    """Train one variant, score the test sample: its logits and its record."""
    import keras
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from medcore.data.datasets import make_dataset
    from medcore.layout import RunLayout
    from medcore.model.training import train_model

    paths = RunLayout(tmp / "runs", name.replace("+", "_")).model("pneumonia", "bench")
    started = time.perf_counter()
    record = train_model(config, profile, split, paths, epochs=epochs)
    model = keras.models.load_model(paths.model, compile=False, safe_mode=True)
    logits = np.concatenate(
        [model.predict_on_batch(x) for x, _ in make_dataset(test, profile, training=False, seed=0)]
    ).ravel()
    result = {
        "test_auc": float(roc_auc_score(labels, logits)),
        "best_val_auc": record["best_val_auc"],
        "wall_seconds": time.perf_counter() - started,
        "precision": record["compute"]["precision"],
        "fused_batch_norm": record["compute"]["fused_batch_norm"],
        "epoch_seconds": record["epoch_seconds"],
    }
    print(
        f"{name}: test AUC {result['test_auc']:.3f}, best val AUC {record['best_val_auc']:.3f}, "
        f"{result['wall_seconds']:.0f}s",
        flush=True,
    )
    return logits, result


def _bootstrap_interval(labels, scores: dict, names: list[str]):
    """The 95 % bootstrap interval of the other mode's test AUC minus float32's, images resampled together."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(1000):
        pick = rng.integers(0, len(labels), len(labels))
        if len(set(labels[pick])) < 2:
            continue
        deltas.append(
            roc_auc_score(labels[pick], scores[names[1]][pick]) - roc_auc_score(labels[pick], scores[names[0]][pick])
        )
    return np.percentile(deltas, [2.5, 97.5])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    from bench.common import NO_DATA, write_result

    if not (Path(args.data_root) / "pneumonia").is_dir():
        print(NO_DATA)
        return 0
    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="medcore-precision-auc-"))
    config, parts = _config_and_samples(args, tmp)
    split = pd.concat(parts[:2])
    test = parts[2]
    base = config.profiles["bench"]
    runs = {
        "float32": dataclasses.replace(base, precision="float32", fused_batch_norm=False),
        args.mode + ("+fused_bn" if args.fused else ""): dataclasses.replace(
            base, precision=args.mode, fused_batch_norm=args.fused
        ),
    }
    labels = test["label"].to_numpy()
    scores, records = {}, {}
    for name, profile in runs.items():
        scores[name], records[name] = _train_and_score(config, name, profile, split, test, tmp, args.epochs, labels)
    names = list(runs)
    delta = records[names[1]]["test_auc"] - records[names[0]]["test_auc"]
    low, high = _bootstrap_interval(labels, scores, names)
    print(f"{names[1]} - float32: {delta:+.3f} (95 % CI {low:+.3f} to {high:+.3f})")
    payload = {
        "size": args.size,
        "epochs": args.epochs,
        "train": len(parts[0]),
        "val": len(parts[1]),
        "test": len(test),
        "runs": records,
        "difference": {"value": delta, "low": float(low), "high": float(high)},
        "load": os.getloadavg(),
    }
    print(f"raw results: {write_result('precision_auc', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
