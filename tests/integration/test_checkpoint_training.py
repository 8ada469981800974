"""Checkpoints of a real (tiny) GRPO run go to a real SeaweedFS as they are saved: the store is killed and
restarted while the first one is uploading and retries carry the run through; the newest K are kept; a
re-run resumes from the newest committed checkpoint, never a torn one. (Slow: a tiny GRPO run.)"""

from __future__ import annotations

import json
import threading
import time

import pytest

from medrl import store, study
from medrl.store import checkpoints, s3
from medrl.store.layout import RunLayout
from medrl.study import arm as arm_steps
from medrl.train import callbacks
from medrl.train.run import scratch_work_dir
from tests.support.servers import s3_environment
from tests.support.tiny_runs import grpo_study

pytestmark = pytest.mark.slow


def test_checkpoints_survive_a_store_restart_and_resume_takes_the_newest_committed(
    own_seaweed, monkeypatch, tmp_path, caplog
):
    bucket = s3_environment(monkeypatch, own_seaweed, tmp_path, retry_seconds=120)
    run_uri = study.init_run(config_text=grpo_study(max_steps=6, save_steps=2, keep=2), store_uri=bucket)
    study.prep(run_uri)
    arm = RunLayout(run_uri).arm("grpo")

    commit = checkpoints.commit_checkpoint
    committed: list[int] = []
    restart = threading.Thread(target=lambda: (time.sleep(2), own_seaweed.start()))

    def commit_through_an_outage(local, uri, step, keep, **part):
        if not committed and restart.ident is None:  # the store dies as the first checkpoint goes up...
            own_seaweed.kill()
            restart.start()  # ...and is back 2 s later
        result = commit(local, uri, step, keep, **part)
        committed.append(step)
        return result

    monkeypatch.setattr(callbacks, "commit_checkpoint", commit_through_an_outage)  # the upload callback's commit
    monkeypatch.setenv(arm_steps.KEEP_AFTER_ENV, "2")  # kept after the model is committed, for the re-run below
    with caplog.at_level("INFO"):
        arm_steps.train_in_run(run_uri, "grpo")
    restart.join()

    assert committed == [2, 4, 6] and own_seaweed.proc.poll() is None
    assert any("retrying" in r.getMessage() for r in caplog.records if r.name == "medrl.store")
    assert not any("was not uploaded" in r.getMessage() for r in caplog.records)
    assert [n for n, _ in checkpoints.steps(arm.checkpoints)] == [4, 6]  # keep 2: step-2 was pruned
    newest = store.open_dir(store.join(arm.checkpoints, "step-6"), verify=True)
    assert json.loads((newest / "trainer_state.json").read_text())["global_step"] == 6
    assert (newest / "model.safetensors").is_file() and (newest / "optimizer.pt").is_file()
    assert store.is_committed(arm.model)
    # The run's folder holds artifacts only: the local work folder (checkpoints, log) is gone once it is committed.
    assert sorted(store.list_dir(arm.uri)) == ["checkpoints", "cost.json", "model", "train_log.jsonl"]
    assert not scratch_work_dir(arm.model).exists()

    # Preempted while step-6 was uploading: its COMMITTED marker never arrived. A re-run must resume from step-4,
    # the newest committed checkpoint: real TRL restarts at step 5 and ends at step 6.
    own_seaweed.client().remove_object(*s3.split(store.join(arm.checkpoints, "step-6", "COMMITTED")))
    store.delete(arm.model)
    caplog.clear()
    with caplog.at_level("INFO"):
        arm_steps.train_in_run(run_uri, "grpo")
    assert any("step-6" in r.getMessage() and "torn" in r.getMessage() for r in caplog.records)
    assert "restored checkpoint step-4" in caplog.text
    summary = json.loads((store.open_dir(arm.model) / "train_summary.json").read_text())
    assert summary["resumed_from"] == 4 and summary["global_step"] == 6
    log = [json.loads(line) for line in (store.open_dir(arm.model) / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "loss" in row] == list(range(1, 7))  # steps 5 and 6 logged once
    assert "arm grpo trained: 6 steps" in caplog.text
