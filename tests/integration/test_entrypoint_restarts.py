"""The training container's exit status under the operator's ExitCode policy, on a real 2-process CPU run
(torchrun, gloo): a rank killed mid-training and a SIGTERM (preemption) give >= 128 (retried); a configuration
error on every rank gives 1 (not retried). The entrypoint is the real `medrl train-arm` in its own process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrl import store
from medrl.store.layout import RunLayout
from medrl.study import init_run, prep

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _run(run_root: Path, run_id: str, *overrides: str) -> str:
    base = ["data.train_size=64", "data.test_size=8", "arms.sft.max_steps=400", "arms.sft.per_device_batch_size=4"]
    uri = init_run(
        preset="demo", overrides=base + list(overrides), store_uri=str(run_root), run_id=run_id, arms=["sft"]
    )
    prep(uri)
    return uri


def _start(uri: str, tmp_path: Path) -> subprocess.Popen:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ, "PET_NNODES": "1", "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "0",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "MEDRL_DEEPSPEED": "none",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TMPDIR": str(tmp_path),
    }  # fmt: skip
    cmd = [sys.executable, "-m", "medrl", "train-arm", "--run", uri, "--arm", "sft"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _ranks_training(proc: subprocess.Popen, tmp_path: Path, timeout: float = 240) -> list[int]:
    """The two rank processes (torchrun's children), once both have written a checkpoint-free step: rank 0's
    train log has a line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        launchers = _children(proc.pid)
        ranks = [r for launcher in launchers for r in _children(launcher)]
        logs = list(tmp_path.glob("medrl-work/*/train_log.jsonl"))
        if len(ranks) == 2 and logs and logs[0].read_text().strip():
            return ranks
        time.sleep(0.5)
    raise AssertionError("the ranks did not start training in time")


@pytest.mark.slow
def test_a_rank_killed_mid_training_exits_for_a_restart_and_the_next_attempt_finishes(run_root, tmp_path):
    uri = _run(run_root, "killed", "arms.sft.max_steps=60", "arms.sft.save_steps=20")
    proc = _start(uri, tmp_path)
    ranks = _ranks_training(proc, tmp_path)
    os.kill(ranks[1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 134, out  # >= 128: the ExitCode policy restarts the pod
    assert "exit 134 so that the job restarts it" in out
    # The recreated pod: a new process with the same run, reading the attempt history the first one left.
    again = _start(uri, tmp_path)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    arm = RunLayout(uri).arm("sft")
    history = json.loads(store.read_text(store.join(arm.uri, "attempts", "node-0.json")))
    assert [r["status"] for r in history] == [134, 0]
    assert store.is_committed(arm.model)


@pytest.mark.slow
def test_sigterm_stops_every_rank_and_exits_143(run_root, tmp_path):
    proc = _start(_run(run_root, "preempted"), tmp_path)
    ranks = _ranks_training(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert not [
        r for r in ranks if Path(f"/proc/{r}").exists() and "zombie" not in Path(f"/proc/{r}/status").read_text()
    ]


@pytest.mark.slow
def test_a_configuration_error_on_every_rank_exits_1(run_root, tmp_path):
    proc = _start(_run(run_root, "misconfigured", "arms.sft.deepspeed=/no/such/ds.json"), tmp_path)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1, out  # not retried: the same settings fail again
    assert "not retried" in out
