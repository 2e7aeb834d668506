"""plan_run turns the trigger form's values into jobs, or refuses them with one sentence a person can act on."""

from __future__ import annotations

import pytest

from medcore.errors import ConfigError
from medcore.jsonio import read_json
from medcore.layout import RunLayout
from medcore.pipeline import MAX_EPOCHS, plan_run


@pytest.mark.parametrize("epochs", [0, -1, MAX_EPOCHS + 1])
def test_epochs_out_of_range_refused_not_changed(tiny_config, epochs):
    """Epochs 0 (which a bounded number box would have turned into 1) is refused, saying the range."""
    with pytest.raises(ConfigError, match=rf"epochs override must be 1 to {MAX_EPOCHS} .*got {epochs}$"):
        plan_run(tiny_config, "r1", epochs=epochs)


def test_empty_selections_mean_all_and_blank_recipient_lines_are_dropped(tiny_config, tmp_path):
    """None (a cleared multi-select) trains everything; the recipients box's trailing blank line is not an address."""
    params = {"conditions": None, "profiles": None, "epochs": None, "recipients": ["a@example.org", "", "  "]}
    jobs = plan_run(tiny_config, "r2", None, None, None, params=params)
    assert len(jobs) == 10
    assert read_json(RunLayout(tmp_path / "runs", "r2").run_json)["params"]["recipients"] == ["a@example.org"]


def test_bad_recipient_named_in_one_sentence(tiny_config):
    """A line that is not an address fails the plan naming that line."""
    with pytest.raises(ConfigError, match=r"^recipients: 'bob' is not an e-mail address"):
        plan_run(tiny_config, "r3", params={"recipients": ["a@example.org", "bob"]})


def _earlier_night(runs_root, cpu: str, seconds_per_image_epoch: float) -> None:
    """An earlier run on this CPU kind: every chain's training.json and stage timings, as the pipeline writes them."""
    import json

    from medcore.config import load_config

    (runs_root / "night0").mkdir(parents=True)
    (runs_root / "night0" / "run.json").write_text("{}")
    for key, profile in load_config(runs_root.parent / "tiny.yaml").trained_profiles().items():
        folder = runs_root / "night0" / key[0] / key[1]
        folder.mkdir(parents=True)
        record = {"image_size": profile.image_size, "train_images": 1000, "val_images": 200, "epochs_run": 2,
                  "wall_seconds": 60 + 2000 * seconds_per_image_epoch, "seconds_to_first_step": 60,
                  "execution": "graph", "machine": {"cpu_id": cpu}, "history": {"val_auc": [0.7, 0.8]}}  # fmt: skip
        (folder / "training.json").write_text(json.dumps(record))
        (folder / "timings.json").write_text(
            json.dumps({s: {"seconds": 30.0} for s in ("validate", "evaluate", "gradcam")})
        )


def test_plan_fits_the_night_into_the_budget_from_this_cpus_last_night(tiny_config, tmp_path, caplog):
    """With a slow earlier night on this CPU kind and a tight budget, plan_run keeps fewer jobs, longest first, with
    planned epochs and training deadlines; plan.json and the plan task's log say what was cut and why."""
    import logging

    from medcore.nights.budget import cpu_id

    _earlier_night(tmp_path / "runs", cpu_id(), seconds_per_image_epoch=10.0)  # 40 images a split: 27 min a chain
    caplog.set_level(logging.INFO, logger="medcore.pipeline")
    jobs = plan_run(tiny_config, "tight", epochs=4, budget_minutes=60)
    plan = read_json(RunLayout(tmp_path / "runs", "tight").plan_json)
    assert plan["budget_minutes"] == 60 and plan["fits"] and plan["predicted_minutes"] <= 60
    assert plan["cuts"] and all(c["why"] for c in plan["cuts"])
    assert len(jobs) == len(plan["chains"]) < 10  # rung 4 dropped the intensive chains
    assert [(j["condition"], j["profile"]) for j in jobs] == [(c["condition"], c["profile"]) for c in plan["chains"]]
    assert all(j["train_deadline_minutes"] > c["predicted_minutes"]["train"] for j, c in zip(jobs, plan["chains"]))
    assert any(j["planned_epochs"] and j["planned_epochs"] < 4 for j in jobs)
    assert "night plan:" in caplog.text and "cut (" in caplog.text
    assert read_json(RunLayout(tmp_path / "runs", "tight").run_json)["jobs"] == jobs


def test_plan_keeps_everything_when_it_fits(tiny_config, tmp_path):
    """A fast earlier night: every job is kept, nothing is cut."""
    from medcore.nights.budget import cpu_id

    _earlier_night(tmp_path / "runs", cpu_id(), seconds_per_image_epoch=0.001)
    jobs = plan_run(tiny_config, "roomy", budget_minutes=240)
    plan = read_json(RunLayout(tmp_path / "runs", "roomy").plan_json)
    assert len(jobs) == 10 and plan["cuts"] == [] and all(j["planned_epochs"] is None for j in jobs)


def test_no_speed_known_keeps_the_full_plan_and_says_so(tiny_config, tmp_path):
    """No night on this CPU kind and no probe (MEDCORE_PROBE=0 in tests): all jobs, and plan.json says why."""
    jobs = plan_run(tiny_config, "unknown")
    assert len(jobs) == 10
    assert "full plan is kept" in read_json(RunLayout(tmp_path / "runs", "unknown").plan_json)["notes"][0]


@pytest.mark.parametrize("budget", [5, 2000])
def test_budget_out_of_range_refused(tiny_config, budget):
    """The trigger form's bounds are checked again here, in one sentence."""
    with pytest.raises(ConfigError, match=r"budget must be 10 to 1440 minutes"):
        plan_run(tiny_config, "rb", budget_minutes=budget)
