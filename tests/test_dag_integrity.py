"""The DAG parses cleanly, cheaply, and has the promised shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
       "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules}
from airflow.serialization.serialized_objects import DagSerialization
for dag_id, dag in bag.dags.items():
    dag = DagSerialization.from_dict(DagSerialization.to_dict(dag))  # what the scheduler and the UI read back
    out[dag_id] = dict(
        tasks={t.task_id: {"down": sorted(t.downstream_task_ids),
                           "trigger": getattr(t.trigger_rule, "value", str(t.trigger_rule)),
                           "mapped_group": t.get_closest_mapped_task_group() is not None, "retries": t.retries,
                           "pool": t.pool, "queue": t.queue,
                           "pool_slots": t.pool_slots, "weight_rule": type(t.weight_rule).__name__,
                           "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None}
               for t in dag.tasks},
        timetable=type(dag.timetable).__name__, summary=dag.timetable.summary, catchup=dag.catchup,
        paused_at_creation=dag.is_paused_upon_creation, start_date=str(dag.start_date),
        params={k: dag.params.get_param(k).dump() for k in dag.params}, tags=sorted(dag.tags), doc=bool(dag.doc_md),
    )
print("PROBE" + json.dumps(out))
"""


def _parse(tmp_path, **env) -> dict:
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/nothing.db",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "dags")], capture_output=True, text=True, env=environment, timeout=180
    )
    line = [text for text in done.stdout.splitlines() if text.startswith("PROBE")]
    assert line, done.stderr[-3000:]
    return json.loads(line[0][5:])


def test_dag_imports_without_errors_or_tensorflow(tmp_path):
    """The DAG bag has no import errors and parsing never imports TensorFlow or Keras."""
    result = _parse(tmp_path)
    assert result["errors"] == {}
    assert result["dags"] == ["medical_training", "medical_training_manual"]
    assert result["tensorflow"] is False


COUNT_LOADS = r"""
import sys
import medcore.config
real, calls = medcore.config.load_config, []
medcore.config.load_config = lambda *args, **kwargs: calls.append(args) or real(*args, **kwargs)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print("LOADS", len(calls), len(bag.dags))
"""


def test_one_parse_loads_the_config_once(tmp_path):
    """Parsing the DAG file (both DAGs) reads the config once: the form's names, chains and timeouts share it."""
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/nothing.db",
    }
    done = subprocess.run(
        [sys.executable, "-c", COUNT_LOADS, str(ROOT / "dags")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
    )
    assert "LOADS 1 2" in done.stdout, done.stdout[-1000:] + done.stderr[-3000:]


def test_dag_shape(tmp_path):
    """A mapped validate->train->evaluate->gradcam chain, then promote and report (all_done), notify, verdict."""
    result = _parse(tmp_path)
    tasks = result["medical_training"]["tasks"]
    assert result["medical_training_manual"]["tasks"] == tasks, "the manual DAG runs the very same tasks"
    chain = ["model_chain.validate", "model_chain.train", "model_chain.evaluate", "model_chain.gradcam"]
    assert set(tasks) == {"plan", *chain, "promote", "report", "notify", "verdict"}
    for upstream, downstream in zip(chain, chain[1:]):
        assert tasks[upstream]["down"] == [downstream]
    assert all(tasks[t]["mapped_group"] for t in chain)
    assert not tasks["report"]["mapped_group"]
    assert tasks["model_chain.gradcam"]["down"] == ["promote"]
    assert set(tasks["plan"]["down"]) == {"model_chain.validate", "promote", "report", "notify", "verdict"}
    # promote and report run whatever the chains did; the report exists before it is sent, and the
    # verdict (the only leaf) runs after both, so a failed model fails the run only at the end. After a refused
    # plan or a failed e-mail it is upstream_failed (none_failed): the run fails with one red task, the one saying why.
    assert tasks["promote"]["down"] == ["report"] and tasks["promote"]["trigger"] == "all_done"
    assert tasks["report"]["down"] == ["notify", "verdict"]
    assert tasks["report"]["trigger"] == "all_done"
    assert tasks["notify"]["down"] == ["verdict"]
    assert tasks["verdict"]["down"] == [] and tasks["verdict"]["trigger"] == "none_failed"
    assert tasks["plan"]["retries"] == 0, "a refused parameter cannot be fixed by a retry"
    assert tasks["model_chain.train"]["retries"] >= 1
    assert tasks["model_chain.train"]["pool"] == "training" and tasks["model_chain.train"]["queue"] == "training"
    # Validations hold the training pool and outrank trainings, so the trainings queue together, in the plan's
    # order (map index), not in the order their validations happen to finish.
    assert tasks["model_chain.validate"]["pool"] == "training"
    # (The downstream rule sums the weights of what follows a task: a validation has its training after it.)
    assert {tasks[f"model_chain.{t}"]["weight_rule"] for t in ("validate", "train")} == {
        "_DownstreamPriorityWeightStrategy"
    }
    for dag_id in ("medical_training", "medical_training_manual"):
        assert sorted(result[dag_id]["params"]) == [
            "budget_minutes",
            "conditions",
            "epochs",
            "profiles",
            "recipients",
            "smtp_conn_id",
        ]
        assert "medcore" in result[dag_id]["tags"] and result[dag_id]["doc"]


def test_schedule_never_catches_up(tmp_path):
    """Nightly: NightlyCron (read back as the scheduler reads it), no catch-up, no start_date that would make
    Airflow run the latest past slot; manual: no schedule, enabled from creation so Trigger runs now."""
    result = _parse(tmp_path)
    nightly, manual = result["medical_training"], result["medical_training_manual"]
    assert nightly["timetable"] == "NightlyCron" and nightly["summary"] == "0 1 * * * (no catch-up)"
    assert nightly["catchup"] is False and nightly["start_date"] == "None"
    assert manual["timetable"] == "NullTimetable" and manual["paused_at_creation"] is False


def test_trigger_form_offers_choices_and_nothing_required(tmp_path):
    """Names are a multi-select of the config's (the form reads `examples`; the API checks `items.enum`); every
    field accepts empty (a "null" type, which the form reads as not required); epochs and the budget bounded as
    plan_run bounds them."""
    from medcore.config import load_config

    config = load_config(ROOT / "conditions.yaml")
    params = _parse(tmp_path)["medical_training_manual"]["params"]
    for name, known in (("conditions", list(config.conditions)), ("profiles", list(config.profiles))):
        schema = params[name]["schema"]
        assert schema["examples"] == known and schema["items"]["enum"] == known
        assert "array" in schema["type"]
    assert all("null" in p["schema"]["type"] for p in params.values())
    assert all(p["value"] is None for p in params.values())
    # Bounds the schema can state are in it: the form holds the box to them and the REST API refuses the rest.
    assert params["epochs"]["schema"]["minimum"] == 1 and params["epochs"]["schema"]["maximum"] == 1000
    assert "pattern" not in params["recipients"]["schema"]["items"]
    from medcore.pipeline import MAX_BUDGET, MIN_BUDGET

    budget = params["budget_minutes"]["schema"]
    assert (budget["minimum"], budget["maximum"]) == (MIN_BUDGET, MAX_BUDGET)


def test_broken_config_does_not_break_parsing(tmp_path):
    """A malformed config still parses the DAG (the plan task reports it), so the UI stays usable."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("conditions: [oops\n")
    result = _parse(tmp_path, MEDCORE_CONFIG=str(bad))
    assert result["errors"] == {} and result["dags"] == ["medical_training", "medical_training_manual"]
    assert "examples" not in result["medical_training"]["params"]["conditions"]["schema"]


def test_profiles_that_take_every_core_train_in_a_chain_holding_every_pool_slot(tmp_path):
    """A profile's `cores` becomes its train task's pool slots: small profiles share, `cores: 0` trains alone."""
    config = tmp_path / "cores.yaml"
    config.write_text(f"extends: {ROOT / 'conditions.yaml'}\nprofiles:\n  large: {{image_size: 224, cores: 0}}\n")
    tasks = _parse(tmp_path, MEDCORE_CONFIG=str(config))["medical_training"]["tasks"]
    cores = os.cpu_count() or 1
    assert tasks["model_chain.train"]["pool_slots"] == 1
    if cores > 1:
        big = f"model_chain_{cores}_cores"
        assert tasks[f"{big}.train"]["pool_slots"] == cores and tasks[f"{big}.train"]["pool"] == "training"
        assert tasks[f"{big}.validate"]["mapped_group"] and tasks[f"{big}.gradcam"]["down"] == ["promote"]
        assert set(tasks["plan"]["down"]) >= {"jobs_for_1_cores", f"jobs_for_{cores}_cores", "promote"}
        assert tasks["jobs_for_1_cores"]["down"] == ["model_chain.validate"]
        assert tasks[f"jobs_for_{cores}_cores"]["down"] == [f"{big}.validate"]


def test_every_task_has_a_timeout_sized_from_the_config(tmp_path):
    """No task can hang a night: each has an execution_timeout, training's from its per-epoch allowance, and
    retries come from the config's `tasks` section."""
    config = tmp_path / "timeouts.yaml"
    config.write_text(
        f"extends: {ROOT / 'conditions.yaml'}\n"
        "tasks: {retries: 4, train_minutes_fixed: 5, train_minutes_per_epoch: 2, validate_minutes: 7}\n"
    )
    tasks = _parse(tmp_path, MEDCORE_CONFIG=str(config))["medical_training"]["tasks"]
    from medcore.config import load_config

    # The most epochs any condition trains (limb's own profile keys give it more than the shipped profiles).
    longest = max(profile.epochs for profile in load_config(config).trained_profiles().values())
    assert longest > max(profile.epochs for profile in load_config(config).profiles.values())
    assert all(t["timeout"] for t in tasks.values()), {k: t["timeout"] for k, t in tasks.items()}
    assert tasks["model_chain.train"]["timeout"] == (5 + 2 * longest) * 60, "fixed + per epoch x the longest"
    assert tasks["model_chain.validate"]["timeout"] == 7 * 60
    assert tasks["model_chain.train"]["retries"] == 4


def test_embedded_executor_runs_short_stages_beside_a_full_training_pool(tmp_path):
    """With executor processes only for the `training` pool's slots (one per core), evaluations queued behind
    22-48 min fits until their workload token (task_queued_timeout) expired, and each expiry cost a try: the
    cold night of 2026-11-30 lost a Grad-CAM that way. The embedded Airflow leaves room beside the pool."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(ROOT / "bin" / "airflow-local"), "env"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    settings = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("AIRFLOW__"))
    pool_slots = os.cpu_count()  # `make airflow-init` and bench/common.py give `training` one slot per core
    assert int(settings["AIRFLOW__CORE__PARALLELISM"]) >= 2 * pool_slots
    from medcore.config import load_config

    tasks = load_config(ROOT / "conditions.yaml").tasks
    # A short stage may wait behind the two others the executor runs beside the trainings.
    assert float(settings["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]) >= 2 * 60 * max(
        tasks.evaluate_minutes, tasks.gradcam_minutes
    )
