"""Each real source's prepared dataset goes through the study unchanged: prep, two SFT steps on the tiny model,
evaluation of the test split (the study functions the pipeline components call)."""

import json

import pytest

from medrl import store, study
from medrl.data.records import read_records
from medrl.study import arm as arm_steps
from tests.support.medvqa_fixtures import BUILDERS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("source", list(BUILDERS))
def test_prepared_source_trains_and_evaluates(source, tiny_model, tmp_path):
    src = BUILDERS[source](tmp_path / "download")
    run = study.init_run(
        preset="demo",
        overrides=[
            f"model.base={tiny_model}",
            f"data.source={source}",
            f"data.input={src}",
            "data.train_size=null",
            "data.test_size=null",
            "arms.sft.max_steps=2",
            "arms.sft.per_device_batch_size=4",
            "evaluate.limit=4",
            "evaluate.batch_size=4",
            "evaluate.max_new_tokens=8",
        ],
        store_uri=str(tmp_path / "store"),
        arms=["sft"],
    )
    data = store.open_dir(study.prep(run))
    test = read_records(data, "test")
    assert test and all(r.source == source and r.meta["answer_type"] in ("closed", "open") for r in test)

    arm_steps.train_in_run(run, "sft")
    log = [json.loads(line) for line in store.read_text(study.RunLayout(run).arm("sft").train_log).splitlines()]
    assert max(row["step"] for row in log) == 2

    doc = json.loads(store.read_text(arm_steps.evaluate_in_run(run, "sft")))
    assert doc["n"] == 4 and doc["metrics"]["accuracy"]["n"] == 4
    predictions = [
        json.loads(line) for line in store.read_text(study.RunLayout(run).arm("sft").predictions).splitlines()
    ]
    assert [p["reference"] for p in predictions] == [r.answer for r in test[:4]]
