"""The shortcut probes and the randomisation check (medcore.assess.probes) on a night's trained models, inference only.

Usage: nice -n 10 .venv/bin/python bench/shortcut_probes.py [--after bench/results/nightly.json]
       [--condition pneumonia ...] [--profile standard ...] [--images 624] [--name shortcut_probes]

Nights trained before issue 37 have no probes in their gradcam.json. This runs them on the night's
models exactly as the Grad-CAM stage does (same settings, the same strongest test images and seed),
with `--images` test images for the border/centre probe (default: the whole test split, for the
narrowest intervals), and records each probe's figures and verdict for BENCHMARKS.md. Writes
bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, write_result
from bench.deletion_baselines import night_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--after", type=Path, default=ROOT / "bench" / "results" / "nightly.json")
    parser.add_argument("--condition", action="append", default=[])
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("--images", type=int, default=100000, help="border/centre probe images (default: all test)")
    parser.add_argument("--name", default="shortcut_probes")
    args = parser.parse_args(argv)

    import pandas as pd

    from medcore.assess.evaluation import load_model
    from medcore.assess.gradcam import GradCam, deletion_inputs
    from medcore.assess.probes import run_probes
    from medcore.config import load_config
    from medcore.model.contract import contract_resize, contract_temperature

    config_name, run, trained = night_models(args.after)
    config = load_config(ROOT / config_name)
    settings = config.gradcam
    probes = dataclasses.replace(settings.probes, images=args.images)
    chosen = [(c, p) for c, p in trained if c in (args.condition or [c]) and p in (args.profile or [p])]
    if not chosen:
        raise SystemExit(f"{args.after}: no trained model matches --condition/--profile")
    models = []
    for condition, profile in chosen:
        paths = run.model(condition, profile)
        explainer = GradCam(load_model(paths.model), settings.layer, settings.batch_size)
        predictions = pd.read_csv(paths.predictions_csv)
        resize = contract_resize(paths.model)
        _, images, _, _ = deletion_inputs(explainer, predictions, settings, resize)
        signed, _ = explainer.signed_maps(images[: probes.sanity_images])
        record = run_probes(
            explainer,
            predictions,
            probes,
            resize=resize,
            temperature=contract_temperature(paths.model),
            strongest=(images, signed),
            seed=settings.seed or 0,
            resamples=config.evaluation.bootstrap_resamples,
            confidence=config.evaluation.confidence,
        )
        models.append({"condition": condition, "profile": profile, **record})
        print(f"{condition}/{profile}: {[f['code'] for f in record['findings']] or 'no probe fired'}", flush=True)
    out = write_result(args.name, {"night": str(args.after), "probes": dataclasses.asdict(probes), "models": models})
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
