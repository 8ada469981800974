"""The training container's entrypoint (`medrl train-arm`): from the operator's environment, start one training
process per GPU (DeepSpeed ZeRO-2 through `accelerate launch`; CPU ranks through torchrun), or train in place.

Each rank calls `medrl.study.train(run_uri, arm)`, which resumes from the newest committed checkpoint in the store.
The exit status is chosen for the operator's ExitCode restart policy, which retries only codes >= 128:
- 1: a configuration or data error (the same input fails again): not retried;
- 128+N: this container was sent signal N (143 for a preemption's SIGTERM), or the launcher was killed by N;
- 134 (RANK_CRASHED): a rank crashed or was killed (CUDA or NCCL error, OOM kill, any other exception): retried.
torchrun and accelerate turn any failed rank into exit 1, so the entrypoint supervises the launcher instead of
becoming it, and ranks that stop on a configuration or data error leave a marker file that says so.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from medrl import study
from medrl.config import ConfigError
from medrl.data.prep import PrepError

log = logging.getLogger("medrl")

ZERO2_CONFIG = "zero2.json"  # under medrl/train/configs/, shipped with the package
FINAL = 1  # a configuration or data error: ExitCode does not retry it
RANK_CRASHED = 128 + signal.SIGABRT  # any other failure of a rank: retried from the newest committed checkpoint
FAILURE_DIR_ENV = "MEDRL_FAILURE_DIR"  # where ranks of this node mark a final failure for the supervisor


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


def run_node(run_uri: str, arm: str, env: Mapping[str, str] | None = None) -> int:
    """Train `arm` of the run at `run_uri` on this node; returns the exit status (see the module's docstring)."""
    env = dict(os.environ if env is None else env)
    use_deepspeed = env.get("MEDRL_DEEPSPEED", "none") == "zero2"
    command = rank_command(env, run_uri, arm, zero2_config() if use_deepspeed else None)
    if command is None:
        return train_rank(run_uri, arm, env)
    log.info("node %s: starting %s rank(s)", env.get("PET_NODE_RANK", "0"), env.get("PET_NPROC_PER_NODE", "1"))
    return supervise(command, env)


def final_errors() -> tuple[type[BaseException], ...]:
    """Errors that the same input raises again: a restart cannot help. A store outage, a dead judge or a crashed
    kernel are not among them."""
    return (ConfigError, PrepError)


def train_rank(run_uri: str, arm: str, env: Mapping[str, str]) -> int:
    """Train in this process (one process in all, or one rank under torchrun/accelerate)."""

    # As PID 1 of a container a process without a handler ignores SIGTERM; a preemption must end training.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        study.train(run_uri, arm)
    except final_errors() as err:
        log.error("arm %s stopped on an error a restart cannot fix: %s", arm, err)
        if env.get(FAILURE_DIR_ENV):
            marker = Path(env[FAILURE_DIR_ENV]) / f"rank-{env.get('RANK', '0')}"
            marker.write_text(type(err).__name__ + "\n", encoding="utf-8")
        return FINAL
    except Exception:
        log.exception("arm %s: training failed; the job restarts it from the newest committed checkpoint", arm)
        return RANK_CRASHED
    return 0


def _exit_on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def supervise(command: list[str], env: Mapping[str, str]) -> int:
    """Run the launcher as a child, pass SIGTERM/SIGINT on to it, and map how it ended to the exit status."""
    with tempfile.TemporaryDirectory(prefix="medrl-failure-") as failures:
        sys.stdout.flush()
        sys.stderr.flush()
        child = subprocess.Popen(command, env={**env, FAILURE_DIR_ENV: failures})
        received: list[int] = []

        def forward(signum: int, _frame) -> None:
            received.append(signum)
            child.send_signal(signum)  # torchrun's agent stops its ranks in turn

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        final = sorted(p.name for p in Path(failures).iterdir())
    if received:
        return 128 + received[0]
    if code == 0:
        return 0
    if final:
        log.error("training stopped on a configuration or data error (%s): not retried", ", ".join(final))
        return FINAL
    if code < 0:
        return 128 - code  # the launcher itself was killed by signal -code
    log.error("a rank failed (launcher exit %d): exit %d so that the job restarts it", code, RANK_CRASHED)
    return RANK_CRASHED
