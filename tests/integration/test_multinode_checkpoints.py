"""Two "nodes" of a real CPU run (two `medrl train-arm` entrypoints, each starting torchrun with --nnodes 2 and its
own node rank on 127.0.0.1, gloo, a separate TMPDIR each, one file:// store): each node uploads its own part of
every checkpoint; both are stopped (SIGTERM, a preemption) after a checkpoint is complete; started again, both
nodes resume from the same step, which the store holds whole, and end with identical weights. (Slow.)"""

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
from medrl.store import checkpoints
from medrl.store.layout import RunLayout
from medrl.study import init_run, prep

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

MAX_STEPS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(uri: str, node: int, port: int, tmp: Path) -> subprocess.Popen:
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ, "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(node),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "MEDRL_DEEPSPEED": "none",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    cmd = [sys.executable, "-m", "medrl", "train-arm", "--run", uri, "--arm", "sft"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _both(uri: str, tmp: Path) -> list[subprocess.Popen]:
    port = _free_port()
    return [_start(uri, node, port, tmp / f"node{node}") for node in (0, 1)]


def test_two_nodes_resume_from_the_same_complete_checkpoint(tmp_path):
    overrides = [
        "data.train_size=64", "data.test_size=8", f"arms.sft.max_steps={MAX_STEPS}",
        "arms.sft.per_device_batch_size=2", "arms.sft.save_steps=2", "arms.sft.save_total_limit=2",
        "arms.sft.deepspeed=zero2",
    ]  # fmt: skip
    uri = init_run(preset="demo", overrides=overrides, store_uri=str(tmp_path / "store"), run_id="mn", arms=["sft"])
    prep(uri)
    arm = RunLayout(uri).arm("sft")

    procs = _both(uri, tmp_path / "first")
    deadline = time.monotonic() + 300
    while checkpoints.latest_committed(arm.checkpoints, nodes=2) is None:
        assert time.monotonic() < deadline, "no checkpoint complete for both nodes in time"
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        time.sleep(0.2)
    for p in procs:
        p.send_signal(signal.SIGTERM)  # a preemption of both pods
    first = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], [out[-3000:] for out in first]
    assert not store.is_committed(arm.model)

    # Every node's part is in the store: node 0's weights and trainer state, node 1's RNG state.
    step, parts = next(checkpoints.complete_checkpoints(arm.checkpoints, nodes=2))
    assert step < MAX_STEPS and [p.rsplit("/", 1)[-1].split("-of-")[0] for p in parts] == ["node-0", "node-1"]
    assert "trainer_state.json" in store.manifest(parts[0])["files"]
    assert "rng_state_1.pth" in store.manifest(parts[1])["files"]
    assert "rng_state_1.pth" not in store.manifest(parts[0])["files"]
    # ZeRO-2 shards the optimizer state: each node holds its rank's shard, which every rank reads on resume.
    shard = f"global_step{step}/zero_pp_rank_1_mp_rank_00_optim_states.pt"
    assert shard in store.manifest(parts[1])["files"] and shard not in store.manifest(parts[0])["files"]

    procs = _both(uri, tmp_path / "second")  # fresh pods: nothing local survives
    second = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [out[-3000:] for out in second]
    for out in second:
        assert f"arm sft: resuming from step {step}" in out
    summary = json.loads((store.open_dir(arm.model) / "train_summary.json").read_text())
    assert summary["resumed_from"] == step and summary["global_step"] == MAX_STEPS
    assert len(summary["weights_sha256"]) == 2 and len(set(summary["weights_sha256"])) == 1
    # The model is committed: its checkpoints are pruned (MEDRL_KEEP_CHECKPOINTS_AFTER defaults to 0).
    assert checkpoints.steps(arm.checkpoints) == []
