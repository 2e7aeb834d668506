"""Grad-CAM's deletion test under each baseline, on a night's trained models: does the verdict depend on the fill?

Usage: .venv/bin/python bench/deletion_baselines.py [--after bench/results/nightly.json] [--condition pneumonia ...]
       [--profile standard ...] [--baselines blur mean] [--name deletion_baselines]

The night's Grad-CAM stage ran the deletion test once, with the configured fill for deleted pixels
(`gradcam.deletion_baseline`, blur by default). A model whose evidence survives blurring keeps its logit
with every pixel "deleted", so no map can beat a random one and the verdict says nothing about the
heatmaps. This runs the same test again on the same trained models, the same images (the test images the
model scores highest, as the stage picks them) and the same seed, once per baseline, and records for each:
the mean logit of the intact and of the fully deleted images (how much evidence the fill removes), the
Grad-CAM and random-map areas under the deletion curve, how many images Grad-CAM wins, and the paired
test's p-value. Inference only. Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, write_result
from medcore.jsonio import read_json
from medcore.layout import ModelLayout, RunLayout

BASELINES = ("blur", "mean")
KEPT = (
    "gradcam_deletion_auc",
    "random_deletion_auc",
    "mean_area_difference",
    "images_gradcam_better",
    "p_value",
    "better_than_random",
)


def night_models(result: Path) -> tuple[str, RunLayout, list[tuple[str, str]]]:
    """The config, run layout and (condition, profile) pairs that trained in the night `result` records."""
    night = read_json(result)
    folder = ROOT / night["run_folder"]
    run = RunLayout(folder.parent, folder.name)
    trained = [(m["condition"], m["profile"]) for m in night["models"] if m["status"] == "succeeded"]
    return night["config"], run, trained


def baseline_figures(paths: ModelLayout, settings: Any, baselines: list[str]) -> dict[str, Any]:
    """The deletion test of one trained model under each baseline, on the images the Grad-CAM stage used."""
    import pandas as pd

    from medcore.assess.evaluation import load_model
    from medcore.assess.gradcam import GradCam, deletion_inputs, faithfulness
    from medcore.model.contract import contract_resize

    explainer = GradCam(load_model(paths.model), settings.layer, settings.batch_size)
    resize = contract_resize(paths.model)
    strongest, images, maps, masks = deletion_inputs(explainer, pd.read_csv(paths.predictions_csv), settings, resize)
    figures: dict[str, Any] = {
        "images": len(images),
        "labelled_positive": int(strongest["label"].sum()),
        "map_shape": list(explainer.map_shape),
    }
    for baseline in baselines:
        start = time.perf_counter()
        test = faithfulness(
            explainer,
            images,
            maps,
            steps=settings.deletion_steps,
            baseline=baseline,
            seed=settings.seed,
            random_maps_per_image=settings.deletion_random_maps,
            alpha=settings.deletion_alpha,
            masks=masks,
        )
        figures[baseline] = {
            **{key: test[key] for key in KEPT},
            "intact_logit": test["gradcam_curve"][0],
            "deleted_logit": test["gradcam_curve"][-1],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(
            f"{paths.condition}/{paths.profile} {baseline}: logit {test['gradcam_curve'][0]:.2f} -> "
            f"{test['gradcam_curve'][-1]:.2f} fully deleted; Grad-CAM wins {test['images_gradcam_better']}/"
            f"{len(images)}, p {test['p_value']:.2g}",
            flush=True,
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--after", type=Path, default=ROOT / "bench" / "results" / "nightly.json")
    parser.add_argument("--condition", action="append", default=[])
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES)
    parser.add_argument("--name", default="deletion_baselines")
    args = parser.parse_args(argv)

    from medcore.config import load_config

    config_name, run, trained = night_models(args.after)
    settings = load_config(ROOT / config_name).gradcam
    chosen = [
        (c, p)
        for c, p in trained
        if (not args.condition or c in args.condition) and (not args.profile or p in args.profile)
    ]
    if not chosen:
        raise SystemExit(f"{args.after}: no trained model matches --condition/--profile")
    models = [
        {"condition": c, "profile": p, **baseline_figures(run.model(c, p), settings, args.baselines)} for c, p in chosen
    ]
    out = write_result(
        args.name,
        {
            "night": str(args.after),
            "run_folder": str(run.root.relative_to(ROOT)),
            "settings": {
                "deletion_images": settings.deletion_images,
                "deletion_steps": settings.deletion_steps,
                "random_maps": settings.deletion_random_maps,
                "alpha": settings.deletion_alpha,
                "seed": settings.seed,
            },
            "models": models,
        },
    )
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
