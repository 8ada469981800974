"""The PyTorchJob container's entrypoint (`medrl train-arm`): from the operator's environment, start one training
process per GPU (DeepSpeed ZeRO-2 through `accelerate launch`; CPU ranks through torchrun), or train in place.

Each rank calls `medrl.study.train(run_uri, arm)`, which resumes from the newest committed checkpoint in the store.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

log = logging.getLogger("medrl")

ZERO2_CONFIG = "zero2.json"  # under medrl/train/configs/, shipped with the package


def zero2_config() -> Path:
    path = Path(str(resources.files("medrl.train") / "configs" / ZERO2_CONFIG))
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config {path} is missing from the package; reinstall medrl")
    return path


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment {name}={raw!r}: expected an integer (set by the training operator)") from None


def rank_command(env: Mapping[str, str], run_uri: str, arm: str, deepspeed_config: Path | None) -> list[str] | None:
    """The command that starts every rank of this node, or None to train in this process (one process in all, or
    already inside a rank started by torchrun/accelerate)."""
    if "LOCAL_RANK" in env:
        return None
    nnodes = _int(env, "PET_NNODES", 1)
    nproc = _int(env, "PET_NPROC_PER_NODE", 1)
    if nnodes * nproc == 1:
        return None
    node_rank = _int(env, "PET_NODE_RANK", 0)
    addr = env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR") or "127.0.0.1"
    port = env.get("PET_MASTER_PORT") or env.get("MASTER_PORT") or "23456"
    # `--run-uri`, not `--run`: torchrun's parser would take `--run` for an abbreviation of its `--run-path`.
    rank_args = ["train-arm", "--run-uri", run_uri, "--arm", arm]
    if deepspeed_config is None:
        # CPU ranks (gloo): torchrun with a static rendezvous on the operator's master service.
        return [
            sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={nnodes}", f"--nproc_per_node={nproc}", f"--node_rank={node_rank}",
            f"--master_addr={addr}", f"--master_port={port}",
            "--module", "medrl", *rank_args,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--use_deepspeed", "--deepspeed_config_file", str(deepspeed_config),
        "--deepspeed_multinode_launcher", "standard",
        "--num_machines", str(nnodes), "--num_processes", str(nnodes * nproc),
        "--machine_rank", str(node_rank), "--main_process_ip", addr, "--main_process_port", str(port),
        "--same_network", "--rdzv_backend", "static",
        "--module", "medrl", *rank_args,
    ]  # fmt: skip


def main(run_uri: str, arm: str, env: Mapping[str, str] | None = None) -> int:
    """Train `arm` of the run at `run_uri` on this node. The exit status follows the operator's ExitCode policy:
    1 (a bug or bad input) is final, 128+N (killed by a signal, e.g. preempted) is retried."""
    env = dict(os.environ if env is None else env)
    use_deepspeed = env.get("MEDRL_DEEPSPEED", "none") == "zero2"
    command = rank_command(env, run_uri, arm, zero2_config() if use_deepspeed else None)
    if command is not None:
        log.info("node %s: starting %s rank(s)", env.get("PET_NODE_RANK", "0"), env.get("PET_NPROC_PER_NODE", "1"))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvpe(command[0], command, env)  # the launcher becomes PID 1: signals and exit codes pass straight
    from medrl import study

    study.train(run_uri, arm)
    return 0
