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
dag = bag.dags.get("medical_training")
out = {"errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
       "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules}
if dag:
    out.update(
        tasks={t.task_id: {"down": sorted(t.downstream_task_ids), "trigger": getattr(t.trigger_rule, "value", str(t.trigger_rule)),
                           "mapped_group": t.get_closest_mapped_task_group() is not None, "retries": t.retries,
                           "pool": t.pool, "queue": t.queue,
                           "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None}
               for t in dag.tasks},
        schedule=str(dag.schedule), catchup=dag.catchup, params=sorted(dag.params.keys()), tags=sorted(dag.tags),
        doc=bool(dag.doc_md),
    )
print("PROBE" + json.dumps(out))
"""


def _parse(tmp_path, **env) -> dict:
    environment = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                   "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/nothing.db", **env}
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags")], capture_output=True, text=True,
                          env=environment, timeout=180)
    line = [l for l in done.stdout.splitlines() if l.startswith("PROBE")]
    assert line, done.stderr[-3000:]
    return json.loads(line[0][5:])


def test_dag_imports_without_errors_or_tensorflow(tmp_path):
    """The DAG bag has no import errors and parsing never imports TensorFlow or Keras."""
    result = _parse(tmp_path)
    assert result["errors"] == {}
    assert result["dags"] == ["medical_training"]
    assert result["tensorflow"] is False


def test_dag_shape(tmp_path):
    """A mapped validate->train->evaluate->gradcam chain, then promote and report (all_done), notify, verdict."""
    result = _parse(tmp_path)
    tasks = result["tasks"]
    chain = ["model_chain.validate", "model_chain.train", "model_chain.evaluate", "model_chain.gradcam"]
    assert set(tasks) == {"plan", *chain, "promote", "report", "notify", "verdict"}
    for upstream, downstream in zip(chain, chain[1:]):
        assert tasks[upstream]["down"] == [downstream]
    assert all(tasks[t]["mapped_group"] for t in chain)
    assert not tasks["report"]["mapped_group"]
    assert tasks["model_chain.gradcam"]["down"] == ["promote"]
    assert set(tasks["plan"]["down"]) == {"model_chain.validate", "promote", "report", "notify"}
    # promote and report run whatever the chains did; the report exists before it is sent, and the
    # verdict (the only leaf) runs after both, so a failed model or e-mail fails the run only at the end.
    assert tasks["promote"]["down"] == ["report"] and tasks["promote"]["trigger"] == "all_done"
    assert tasks["report"]["down"] == ["notify", "verdict"]
    assert tasks["report"]["trigger"] == "all_done"
    assert tasks["notify"]["down"] == ["verdict"]
    assert tasks["verdict"]["down"] == [] and tasks["verdict"]["trigger"] == "all_done"
    assert tasks["model_chain.train"]["retries"] >= 1
    assert tasks["model_chain.train"]["pool"] == "training" and tasks["model_chain.train"]["queue"] == "training"
    assert result["schedule"] not in ("None", "") and result["catchup"] is False
    assert result["params"] == ["conditions", "epochs", "profiles", "recipients", "smtp_conn_id"]
    assert "medcore" in result["tags"] and result["doc"]


def test_broken_config_does_not_break_parsing(tmp_path):
    """A malformed config still parses the DAG (the plan task reports it), so the UI stays usable."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("conditions: [oops\n")
    result = _parse(tmp_path, MEDCORE_CONFIG=str(bad))
    assert result["errors"] == {} and result["dags"] == ["medical_training"]


def test_every_task_has_a_timeout_sized_from_the_config(tmp_path):
    """No task can hang a night: each has an execution_timeout, training's from its per-epoch allowance, and
    retries come from the config's `tasks` section."""
    config = tmp_path / "timeouts.yaml"
    config.write_text(f"extends: {ROOT / 'conditions.yaml'}\n"
                      "tasks: {retries: 4, train_minutes_fixed: 5, train_minutes_per_epoch: 2, validate_minutes: 7}\n")
    tasks = _parse(tmp_path, MEDCORE_CONFIG=str(config))["tasks"]
    assert all(t["timeout"] for t in tasks.values()), {k: t["timeout"] for k, t in tasks.items()}
    assert tasks["model_chain.train"]["timeout"] == (5 + 2 * 8) * 60, "fixed + per epoch x the longest profile (8)"
    assert tasks["model_chain.validate"]["timeout"] == 7 * 60
    assert tasks["model_chain.train"]["retries"] == 4
