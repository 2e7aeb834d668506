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
