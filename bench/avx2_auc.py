"""Does a faster float32 setting cost accuracy? Old and new settings trained alike, scored on the same test images.

Usage: nice -n 10 .venv/bin/python bench/avx2_auc.py --new fused_batch_norm=false [--new batch_size=64]
       [--size 128] [--train 800] [--val 200] [--test 400] [--epochs 4] [--isa AVX2] [--name avx2_auc]

Both runs are `medcore.model.training.train_model` in float32 (what `precision: auto` picks without bf16) on the
same seeded sample of real pneumonia images, same seed and epochs; `old` is the standard profile as shipped,
`new` the same profile with each `--new KEY=VALUE` applied (profile fields). Each model then scores the same
test sample; the record holds both ROC AUCs, the paired difference (new - old) and its 95 % bootstrap
interval over test images (both models resampled together). `--isa` sets ONEDNN_MAX_CPU_ISA (and XLA's cap)
before TensorFlow starts, to emulate an AVX2-only CPU on a newer one. Writes bench/results/<name>.json.
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


def overrides(pairs: list[str]) -> dict[str, object]:
    """`KEY=VALUE` profile overrides, the values read as YAML (true, 64, 0.001)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--new {pair!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", action="append", default=[], help="profile KEY=VALUE of the new settings")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--isa", default="AVX2", help="ONEDNN_MAX_CPU_ISA ('' for none)")
    parser.add_argument("--name", default="avx2_auc")
    parser.add_argument(
        "--data-root", default=os.environ.get("MEDCORE_DATA_ROOT", str(ROOT.parent / "shared" / "datasets"))
    )
    return parser


def _config_and_samples(args: argparse.Namespace, tmp: Path):
    """The config over the real sets, and the seeded train, val and test samples of pneumonia images."""
    from medcore.config import load_config
    from medcore.data.validation import validate_condition

    config_path = tmp / "auc.yaml"
    config_path.write_text(
        f"extends: {ROOT / 'conditions.yaml'}\ndata_root: {Path(args.data_root).resolve()}\n"
        f"runs_root: {tmp / 'runs'}\nseed: {args.seed}\n"
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
    """Train one variant, score the test sample: its scores and its record."""
    import keras
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from medcore.data.datasets import make_dataset
    from medcore.layout import RunLayout
    from medcore.model.training import train_model

    paths = RunLayout(tmp / "runs", name).model("pneumonia", "standard")
    started = time.perf_counter()
    record = train_model(config, profile, split, paths, epochs=epochs)
    model = keras.models.load_model(paths.model, compile=False, safe_mode=True)
    scores = np.concatenate(
        [model.predict_on_batch(x) for x, _ in make_dataset(test, profile, training=False, seed=0)]
    ).ravel()
    return scores, {
        "test_auc": round(float(roc_auc_score(labels, scores)), 4),
        "best_val_auc": record["best_val_auc"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "images_per_second": record["images_per_second"],
        "cpu_seconds": record["cpu_seconds"],
        "compute": record["compute"],
        "batch_size": profile.batch_size,
        "fused_batch_norm": profile.fused_batch_norm,
    }


def _bootstrap_interval(labels, scores: dict):
    """The 95 % bootstrap interval of new - old test AUC, both models resampled together."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(2000):
        pick = rng.integers(0, len(labels), len(labels))
        if len(set(labels[pick])) == 2:
            deltas.append(
                roc_auc_score(labels[pick], scores["new"][pick]) - roc_auc_score(labels[pick], scores["old"][pick])
            )
    return np.percentile(deltas, [2.5, 97.5])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.isa
        os.environ["XLA_FLAGS"] = f"--xla_cpu_max_isa={args.isa}"

    from bench.common import NO_DATA, write_result

    if not (Path(args.data_root) / "pneumonia").is_dir():
        print(NO_DATA)
        return 0
    import pandas as pd

    new = overrides(args.new)
    tmp = Path(tempfile.mkdtemp(prefix="medcore-avx2-auc-"))
    config, parts = _config_and_samples(args, tmp)
    split, test = pd.concat(parts[:2]), parts[2]
    old = dataclasses.replace(
        config.profiles["standard"], image_size=args.size, epochs=args.epochs, patience=99, precision="float32"
    )
    runs = {"old": old, "new": dataclasses.replace(old, **new)}
    labels = test["label"].to_numpy()
    scores, records = {}, {}
    for name, profile in runs.items():
        scores[name], records[name] = _train_and_score(config, name, profile, split, test, tmp, args.epochs, labels)
        print(f"{name}: test AUC {records[name]['test_auc']:.3f}, {records[name]['wall_seconds']:.0f}s", flush=True)
    delta = records["new"]["test_auc"] - records["old"]["test_auc"]
    low, high = _bootstrap_interval(labels, scores)
    print(f"new - old: {delta:+.3f} (95 % CI {low:+.3f} to {high:+.3f})")
    payload = {
        "command": "bench/avx2_auc.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "emulation": f"ONEDNN_MAX_CPU_ISA={args.isa}" if args.isa else "none",
        "new": new,
        "size": args.size,
        "epochs": args.epochs,
        "seed": args.seed,
        "train": len(parts[0]),
        "val": len(parts[1]),
        "test": len(test),
        "runs": records,
        "difference": {"value": round(delta, 4), "low": round(float(low), 4), "high": round(float(high), 4)},
        "load": os.getloadavg(),
    }
    print(f"raw results: {write_result(args.name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
