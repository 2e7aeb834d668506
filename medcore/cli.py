"""The `medcore` command: the same stage functions the DAG calls, without Airflow."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from medcore.errors import MedcoreError
from medcore.logs import setup_logging

__all__ = ["main", "PREDICT_COLUMNS", "default_run_id"]

PREDICT_COLUMNS = ("path", "probability", "predicted", "refused")


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter buries the one line a user needs to read.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _within(flag: str, value: int, low: int, high: int) -> None:
    """A command-line number in its range, else one line naming the flag (no pydantic or numpy traceback later)."""
    if not low <= value <= high:
        raise MedcoreError(f"{flag} must be between {low} and {high}, got {value}")


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from medcore.data.synthetic import write_demo_data

    _within("--seed", args.seed, 0, 2**32 - 1)
    counts = write_demo_data(
        Path(args.dir), per_class=args.per_class, size=args.size, seed=args.seed, dicom_per_class=args.dicom_per_class
    )
    for name, n in counts.items():
        print(f"{name}: {n} images")
    print(f"demo data written to {Path(args.dir).resolve()}")
    return 0


VALIDATE_OUTPUTS = ("validation.json", "validation.txt", "split.csv")
VALIDATE_MARKER = ".medcore-validate"  # says the folder's validation files are validate's own, which a rerun replaces


def _output_folder(out: Path, config) -> Path:
    """`--out` as a folder to write into: not an existing file, never inside a dataset (data stays read-only),
    and never over a validation.json, validation.txt or split.csv that an earlier `validate` did not write."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MedcoreError(f"{out}: exists and is not a folder; --out names a folder for validation.json")
    resolved = out.resolve()
    for condition in config.conditions.values():
        dataset = config.dataset_dir(condition).resolve()
        if resolved == dataset or resolved.is_relative_to(dataset):
            raise MedcoreError(
                f"{out}: inside the dataset folder of {condition.name} ({dataset}); "
                "validation never writes into data, pick a folder elsewhere"
            )
    ours = (out / VALIDATE_MARKER).is_file()
    for name in VALIDATE_OUTPUTS:
        target = out / name
        if target.is_symlink() or (target.exists() and not (ours and target.is_file())):
            raise MedcoreError(
                f"{target}: exists and was not written by medcore validate; name a new folder or remove it"
            )
    return out


def _cmd_validate(args: argparse.Namespace) -> int:
    from medcore.config import load_config
    from medcore.data.validation import validate_condition
    from medcore.jsonio import atomic_write_text, write_json

    config = load_config(args.config)
    if args.condition not in config.conditions:
        raise MedcoreError(
            f"{config.path}: unknown condition {args.condition!r} (known: {', '.join(config.conditions)})"
        )
    out = _output_folder(Path(args.out), config)
    result = validate_condition(config, config.conditions[args.condition])
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / VALIDATE_MARKER, "written by medcore validate; a rerun replaces its files here\n")
        write_json(out / "validation.json", result.to_dict())
        atomic_write_text(out / "validation.txt", result.summary())
        if result.manifest is not None:  # the split a run would train on, to inspect without training
            atomic_write_text(out / "split.csv", result.manifest.to_csv(index=False))
    except OSError as exc:
        raise MedcoreError(f"{out}: cannot write the validation report: {exc.strerror or exc}") from None
    print(result.summary(), end="")
    if not result.ok:
        print(f"medcore: {args.condition}: not trainable: {result.reason}", file=sys.stderr)
        return 1
    return 0


def default_run_id() -> str:
    """`cli__<UTC time to the microsecond>__<host>__<4 hex>`: unique across quick reruns and machines."""
    import re
    import secrets
    import socket

    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname().split(".")[0]).strip("-")[:40] or "host"
    return f"cli__{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}__{host}__{secrets.token_hex(2)}"


def _cmd_run(args: argparse.Namespace) -> int:
    """Every step the DAG runs, here: plan, chains, promote, report, notify, verdict (exit 1: failed)."""
    from medcore.pipeline.orchestrator import run_all

    run_id = args.run_id or default_run_id()
    summary = run_all(args.config, run_id, args.condition or (), args.profile or (), args.epochs, args.budget)
    for failure in summary["failures"]:
        print(f"FAILED {failure['condition']}/{failure['profile']} at {failure['stage']}: {failure['error']}")
    print(f"{summary['succeeded']}/{summary['planned']} models succeeded")
    print(f"report: {summary['report']}")
    print(f"e-mail {_sent(summary['notify'])}")
    return 0 if summary["verdict_ok"] else 1


def _sent(record: dict) -> str:
    """The notify record in one line: "skipped: no recipients: ...", "sent: <subject>" or "failed: <error>"."""
    shown = record.get("error") or record.get("reason") or record.get("subject")
    return f"{record['status']}: {shown}" + (" (the earlier success stays recorded)" if record.get("kept") else "")


def _cmd_watch(args: argparse.Namespace) -> int:
    from medcore.config import load_config
    from medcore.progress import watch

    command = [c for c in args.command if c != "--"]
    if not command:
        raise MedcoreError("watch: no command to run (medcore watch --log FILE -- COMMAND ...)")
    runs_root = load_config(args.config).runs_root
    home = os.environ.get("AIRFLOW_HOME")
    airflow_db = Path(home) / "airflow.db" if home else None
    return watch(command, Path(args.log), Path(runs_root), airflow_db)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from medcore.config import load_config
    from medcore.model.pretraining import pretrain_backbone
    from medcore.nights.registry import registry_of

    config = load_config(args.config)
    if args.profile not in config.profiles:
        raise MedcoreError(f"{config.path}: no profile named {args.profile!r} (have {', '.join(config.profiles)})")
    if args.epochs is not None:
        from medcore.pipeline.jobs import MAX_EPOCHS

        _within("--epochs", args.epochs, 1, MAX_EPOCHS)
    registry = registry_of(config)
    record = pretrain_backbone(
        config,
        config.profiles[args.profile],
        registry,
        epochs=args.epochs,
        conditions=args.condition,
        task_shares=args.task_shares,
    )
    for name, why in record["skipped"].items():
        print(f"SKIPPED {name}: {why}")
    shown = ", ".join(f"{c} {a:.3f}" for c, a in record["val_auc"].items()) or f"mean {record['val_mean_auc']:.3f}"
    print(
        f"shared backbone from {len(record['conditions'])} conditions, best epoch {record['best_epoch']}/"
        f"{record['epochs']} (val AUC {shown}) in {record['wall_seconds'] / 60:.1f} min"
    )
    print(f"written to {record['model_path']}; profiles start from it with `weights: shared`")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from medcore.assess.evaluation import list_images, load_model, predict_files, refusals
    from medcore.jsonio import atomic_write_text, check_output_file
    from medcore.model.contract import contract_resize, contract_temperature, contract_threshold

    model_path = Path(args.model)
    if not model_path.is_file() or model_path.suffix != ".keras":
        raise MedcoreError(f"{model_path}: no such .keras model file")
    _within("--batch-size", args.batch_size, 1, 4096)  # a profile's batch_size range
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise MedcoreError(f"--threshold must be between 0 and 1, got {args.threshold}")
    images = Path(args.images)
    # Never replace what is not ours: absent, or a CSV this command wrote before (its header line says so).
    out = check_output_file(Path(args.out), ",".join(PREDICT_COLUMNS), (images,) if images.is_dir() else ())
    files = list_images(args.images, args.column)  # before loading the model: a bad path fails in a second
    if args.threshold is not None:
        threshold, source = args.threshold, f"threshold {args.threshold:.4f} from --threshold"
    else:
        threshold, source = contract_threshold(model_path)
    model = load_model(model_path)  # a file Keras cannot build a model from is a one-line MedcoreError
    # The images validation would drop are rows with their reason, never scored as garbage nor a failed batch.
    reasons = refusals(files)
    usable = [f for f, why in zip(files, reasons, strict=True) if not why]
    table = pd.DataFrame({"path": [str(f) for f in files], "refused": reasons})
    table["probability"], table["predicted"] = pd.Series(dtype=float), pd.Series(dtype="Int64")
    if usable:
        # Calibrated and resized as in the report: the threshold in model.json is on the same scale.
        probabilities = predict_files(
            model, usable, args.batch_size, contract_temperature(model_path), contract_resize(model_path)
        )
        scored = table["refused"] == ""
        table.loc[scored, "probability"] = probabilities
        table.loc[scored, "predicted"] = (probabilities >= threshold).astype(int)
    table = table[list(PREDICT_COLUMNS)]
    atomic_write_text(out, table.to_csv(index=False))
    print(source, file=sys.stderr)
    refused = len(files) - len(usable)
    print(
        f"{len(usable)} images scored, {int(table['predicted'].sum())} predicted positive"
        f"{f', {refused} refused (reason in the refused column)' if refused else ''}; written to {out}"
    )
    return 0 if usable else 1


def _cmd_resend(args: argparse.Namespace) -> int:
    """E-mail a run's report again, through the DAG's notify code and the same Airflow connection."""
    from medcore.pipeline.orchestrator import resend

    to = [a for given in args.to or () for a in given.replace(",", " ").split()]
    record = resend(args.config, args.run, to)
    print(_sent(record))
    return 1 if record["status"] == "failed" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    _data_commands(commands)
    _run_commands(commands)
    _pretrain_command(commands)
    _model_commands(commands)
    return parser


def _data_commands(commands) -> None:
    """demo-data and validate: data to try medcore on, and one condition's check."""
    demo = commands.add_parser("demo-data", help="write small synthetic datasets in every supported layout")
    demo.add_argument("dir")
    demo.add_argument("--per-class", type=int, default=60)
    demo.add_argument("--size", type=int, default=128, help="image side in pixels (128: a 4x4 Grad-CAM map)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--dicom-per-class",
        type=int,
        default=24,
        help="films per class of the DICOM set (knee_osteoporosis); the default is too few for a quality tier, "
        "the demo's deliberate problem",
    )
    demo.set_defaults(func=_cmd_demo_data)

    validate = commands.add_parser("validate", help="check one condition's dataset")
    validate.add_argument("--config", default=None, help="YAML config (default: $MEDCORE_CONFIG or conditions.yaml)")
    validate.add_argument("--condition", required=True)
    validate.add_argument("--out", required=True, help="folder for validation.json, validation.txt and split.csv")
    validate.set_defaults(func=_cmd_validate)


def _run_commands(commands) -> None:
    """run and watch: every step without Airflow, and `airflow dags test` with its progress."""
    run = commands.add_parser(
        "run",
        help="validate, train, evaluate and explain every model, then promote, report and e-mail: the DAG's steps",
    )
    run.add_argument("--config", default=None)
    run.add_argument("--condition", action="append", help="repeat to pick several (default: all)")
    run.add_argument("--profile", action="append", help="repeat to pick several (default: all)")
    run.add_argument("--epochs", type=int, default=None, help="override every profile's epochs")
    run.add_argument(
        "--budget", type=float, default=None, help="minutes the run may take (default: config's night.budget_minutes)"
    )
    run.add_argument("--run-id", default=None)
    run.set_defaults(func=_cmd_run)

    watched = commands.add_parser(
        "watch", help="run a command (e.g. `airflow dags test`) with its output in a log; print its run's progress"
    )
    watched.add_argument("--config", default=None, help="the run's config, for its runs folder")
    watched.add_argument("--log", required=True, help="file for the command's output")
    watched.add_argument("command", nargs=argparse.REMAINDER, help="-- and the command to run")
    watched.set_defaults(func=_cmd_watch)


def _pretrain_command(commands) -> None:
    """pretrain: the shared backbone."""
    from medcore.model.pretraining import TASK_SHARES

    pretrain = commands.add_parser("pretrain", help="learn one shared backbone from every condition's train split")
    pretrain.add_argument("--config", default=None)
    pretrain.add_argument("--profile", default="standard", help="image size, augmentation and rate to learn with")
    pretrain.add_argument("--condition", action="append", help="repeat to pick several (default: all)")
    pretrain.add_argument("--epochs", type=int, default=None, help="default: the profile's epochs")
    pretrain.add_argument(
        "--task-shares",
        choices=TASK_SHARES,
        default=TASK_SHARES[0],
        help="each condition's share of the loss: equal, or by its number of training images",
    )
    pretrain.set_defaults(func=_cmd_pretrain)


def _model_commands(commands) -> None:
    """predict and resend: a trained model's scores, a run's report e-mailed again."""
    predict = commands.add_parser("predict", help="score new images with a trained model (path, probability, label)")
    predict.add_argument("--model", required=True, help="a model.keras written by training")
    predict.add_argument("--images", required=True, help="a folder of images, or a CSV with a path column")
    predict.add_argument("--out", required=True, help="CSV to write: path, probability, predicted")
    predict.add_argument("--column", default=None, help="the CSV's path column (default: path, image or relpath)")
    predict.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold (default: the one in model.json beside the model, else 0.5)",
    )
    predict.add_argument("--batch-size", type=int, default=32)
    predict.set_defaults(func=_cmd_predict)

    resend = commands.add_parser("resend", help="e-mail a run's report again, through the DAG's SMTP connection")
    resend.add_argument("run", help="the run id, or its folder name under the runs root")
    resend.add_argument("--to", action="append", help="recipient(s), repeat or separate by commas (default: the run's)")
    resend.add_argument("--config", default=None)
    resend.set_defaults(func=_cmd_resend)


def main(argv: list[str] | None = None) -> int:
    """Entry point; user mistakes print one line and exit 2, never a traceback."""
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return args.func(args)
    except MedcoreError as exc:
        print(f"medcore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
