"""The torch steps of a study run (medrl.study.arm): what a retried train step does once the model is committed."""

import json

from medrl import store, study
from medrl.store import checkpoints
from medrl.store.layout import RunLayout
from medrl.study import arm as arm_steps

STUDY = """
name: retried
experiment: retried
model: {base: "org/some-model"}
data: {source: synthetic, train_size: 8, test_size: 4}
arms:
  sft: {method: sft, epochs: 1}
"""


def test_a_retry_after_the_model_commit_restores_the_log_and_prunes_the_checkpoints(tmp_path, monkeypatch):
    """The first attempt committed the model (its train_log.jsonl inside) and died before the log went beside it and
    the checkpoints were pruned (a kill, a store outage): the retry does both, instead of leaving the arm without
    its curves and the store with every checkpoint."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = RunLayout(study.init_run(config_text=STUDY, store_uri=str(tmp_path / "store"), run_id="r1"))
    paths = run.arm("sft")
    log_rows = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2))
    for step in (1, 2):
        with store.commit_dir(paths.checkpoint(step)) as out:
            (out / "weights.bin").write_bytes(b"w")
    with store.commit_dir(paths.model) as out:
        (out / "model.safetensors").write_bytes(b"m")
        (out / "train_log.jsonl").write_text(log_rows)

    assert arm_steps.train_in_run(run.uri, "sft") == paths.model
    assert store.read_text(paths.train_log) == log_rows
    assert checkpoints.steps(paths.checkpoints) == []  # MEDRL_KEEP_CHECKPOINTS_AFTER: 0 by default


def test_one_file_of_an_artifact_is_read_checked(tmp_path):
    uri = store.normalize(str(tmp_path / "model"))
    with store.commit_dir(uri) as out:
        (out / "train_log.jsonl").write_text("{}\n")
    assert store.member(uri, "train_log.jsonl") == b"{}\n"
    assert store.member(uri, "absent.txt") is None
    (tmp_path / "model" / "train_log.jsonl").write_text("[]\n")
    try:
        store.member(uri, "train_log.jsonl")
    except store.IntegrityError as err:
        assert "train_log" not in str(err) and err.file == "train_log.jsonl"
    else:
        raise AssertionError("a changed file was read as the committed one")
