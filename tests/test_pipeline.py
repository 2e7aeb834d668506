"""Pipeline stages on a real tiny dataset: what a stage leaves behind when it fails."""

from __future__ import annotations

import shutil

import pytest

from medcore import pipeline
from medcore.errors import DataError
from medcore.layout import RunLayout


def test_a_failed_validation_removes_the_split_of_an_earlier_pass(tiny_config, demo_data, tmp_path):
    """Validate passes and writes split.csv; the data breaks; validate again fails and leaves no split to train on."""
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    config = tiny_config.with_name("copy.yaml")
    config.write_text(tiny_config.read_text().replace(f"data_root: {demo_data}", f"data_root: {data}"))
    [job] = pipeline.plan_run(config, "split-test", ["knee_osteoporosis"], ["standard"])
    paths = RunLayout(job["runs_root"], job["run_id"]).model(job["condition"], job["profile"])
    pipeline.validate(job)
    assert paths.split_csv.is_file()
    for folder in (data / "knee_osteoporosis").iterdir():
        if folder.is_dir() and folder.name == "osteoporosis":
            shutil.rmtree(folder)  # one class gone: not trainable any more
    pipeline._config.cache_clear()
    with pytest.raises(DataError):
        pipeline.validate(job)
    assert not paths.split_csv.exists(), "train would have used the previous split"
    assert paths.failure_json.is_file() and paths.validation_json.is_file()
    with pytest.raises(Exception, match="no split manifest"):
        pipeline.train(job)
