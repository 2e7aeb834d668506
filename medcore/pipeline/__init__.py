"""The pipeline: the stages the Airflow DAG and `medcore run` share, and the one orchestrator that runs them.

- `jobs`: the plan, one job per (condition, profile) the night budget keeps (run.json, plan.json).
- `stage`: what every chain stage shares (its job's config and folders, failure and timing records).
- `validating`, `training`, `assessing`: one model's chain, validate -> train -> evaluate -> gradcam.
- `closing`: the run's stages after the chains: promote, report, notify, verdict.
- `orchestrator`: the order they run in, as named steps; the DAG's tasks and `medcore run` both call it.

Nothing here imports pandas or TensorFlow at import time: the DAG imports the orchestrator when it is parsed.
"""

from medcore.pipeline.assessing import evaluate, gradcam
from medcore.pipeline.closing import notify, promote, report, verdict
from medcore.pipeline.jobs import (
    MAX_BUDGET,
    MAX_EPOCHS,
    MIN_BUDGET,
    jobs_by_slots,
    nothing_planned,
    plan_run,
    recipients,
    run_of,
)
from medcore.pipeline.orchestrator import run_all, run_chain, run_lock
from medcore.pipeline.stage import STAGES, Job, clear_config_cache
from medcore.pipeline.training import train
from medcore.pipeline.validating import plan_condition, validate

__all__ = [
    "STAGES",
    "MAX_EPOCHS",
    "MIN_BUDGET",
    "MAX_BUDGET",
    "Job",
    "clear_config_cache",
    "recipients",
    "plan_run",
    "jobs_by_slots",
    "nothing_planned",
    "run_of",
    "validate",
    "plan_condition",
    "train",
    "evaluate",
    "gradcam",
    "promote",
    "report",
    "notify",
    "verdict",
    "run_chain",
    "run_lock",
    "run_all",
]
