"""The training container's entrypoint (`medrl train-arm`): from the operator's environment, start one training
process per GPU (DeepSpeed ZeRO-2 through `accelerate launch`; CPU ranks through torchrun), or train in place.

Each rank calls `medrl.study.arm.train_in_run(run_uri, arm)`, which resumes from the newest committed checkpoint in
the store.
The exit status is chosen for the operator's restart policy (PyTorchJob `ExitCode`, the TrainJob runtime's pod
failure policy), which retries only codes >= 128:
- 1 (FINAL): an error a restart cannot fix (configuration, data, a missing run or arm, a non-finite loss, an import
  that fails, a rollout engine that cannot start), or the restart budget is spent: not retried;
- 128+N: this container was sent signal N (143 for a preemption's SIGTERM), or the launcher was killed by N;
- 134 (RANK_CRASHED): a rank crashed or was killed (CUDA or NCCL error, OOM, any other exception): retried.

The restart budget: every attempt of a node is recorded in the run's folder in the store
(`arms/<arm>/attempts/node-<K>.json`: its cause, exit status and the newest committed checkpoint), so every pod,
recreated or not, reads the same history. After MEDRL_ATTEMPTS_WITHOUT_PROGRESS (default 3) failed attempts in a
row of one job (MEDRL_LAUNCH_ID, set by the launcher) without a newer committed checkpoint the node exits 1 with the
attempts' causes. An attempt that left no end
record (the container was OOM-killed or its node lost) counts as a failure; a preemption (SIGTERM) does not.
torchrun and accelerate turn any failed rank into exit 1, so the entrypoint supervises the launcher instead of
becoming it, and each failed rank leaves a note (final or not, and its cause) for the supervisor.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from medrl import store, study
from medrl.config import ConfigError
from medrl.data.prep import PrepError
from medrl.errors import MedrlError
from medrl.models.load import ModelError
from medrl.store import checkpoints
from medrl.store.layout import LayoutError, RunLayout
from medrl.study import arm as arm_steps
from medrl.train.common import NonFiniteError
from medrl.train.rollout import EngineStartError

log = logging.getLogger("medrl")

ZERO2_CONFIG = "zero2.json"  # under medrl/train/configs/, shipped with the package
FINAL = 1  # an error a restart cannot fix, or the restart budget spent: ExitCode does not retry it
RANK_CRASHED = 128 + signal.SIGABRT  # any other failure of a rank: retried from the newest committed checkpoint
PREEMPTED = {128 + signal.SIGTERM, 128 + signal.SIGINT}  # stopped from outside: not counted against the budget
FAILURE_DIR_ENV = "MEDRL_FAILURE_DIR"  # where ranks of this node leave a note on how they failed
BUDGET_ENV = "MEDRL_ATTEMPTS_WITHOUT_PROGRESS"
LAUNCH_ENV = "MEDRL_LAUNCH_ID"  # the launcher's id of this job: a new job starts a new count
DEFAULT_BUDGET = 3  # failed attempts in a row without a newer committed checkpoint before the node gives up
PATH_LIKE = re.compile(r"""['"]?[^\s'"]*/[^\s'"]*['"]?""")
CAUSE_CHARS = 300  # a cause is the exception's type and the first line of its message, cut to this length


class RunError(MedrlError):
    """The run, its arm or its prepared data is not there: the same pod would fail the same way again."""


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
    if "LOCAL_RANK" in env:  # one rank started by torchrun/accelerate: the node's entrypoint keeps the history
        return train_rank(run_uri, arm, env)
    try:
        budget = attempt_budget(env)
        run_arm = check_run(run_uri, arm)
        use_deepspeed = env.get("MEDRL_DEEPSPEED", "none") == "zero2"
        command = rank_command(env, run_uri, arm, zero2_config() if use_deepspeed else None)
    except final_errors() as err:
        return stop(arm, [cause_of(err)])
    except Exception:  # a store outage: another attempt may get through
        log.exception("arm %s: could not start training; exit %d so that the job retries it", arm, RANK_CRASHED)
        return RANK_CRASHED
    attempts = Attempts(
        run_arm, node=_int(env, "PET_NODE_RANK", 0), nodes=_int(env, "PET_NNODES", 1), launch=env.get(LAUNCH_ENV, "")
    )
    try:
        attempts.begin()
    except Exception:  # the store is out: nothing trains without it, and another attempt may reach it
        log.exception("arm %s: could not record the attempt in %s; exit %d so that the job retries it", arm,
                      attempts.uri, RANK_CRASHED)  # fmt: skip
        return RANK_CRASHED
    if attempts.spent(budget):  # earlier attempts ended without a word (OOM kills, lost nodes)
        return stop(arm, attempts.causes(budget), budget=budget, history=attempts.uri)
    if command is None:
        status, cause = attempt_here(run_uri, arm)
    else:
        log.info("node %s: starting %s rank(s)", env.get("PET_NODE_RANK", "0"), env.get("PET_NPROC_PER_NODE", "1"))
        status, cause = supervise_ranks(command, env)
    try:
        attempts.end(status, cause)
    except Exception as err:  # the next attempt counts this one as ended without a record
        log.warning("arm %s: could not record how attempt %d ended (%s)", arm, attempts.number, cause_of(err))
    if status == 0 or status in PREEMPTED:
        return status
    if status == FINAL:
        return stop(arm, [cause])
    if attempts.spent(budget):
        return stop(arm, attempts.causes(budget), budget=budget, history=attempts.uri)
    log.error(
        "arm %s: attempt %d failed (%s); %d of %d failed attempts without a newer committed checkpoint; exit %d so "
        "that the job restarts it from the newest committed checkpoint",
        arm, attempts.number, cause, attempts.failures(), budget, status,
    )  # fmt: skip
    return status


def stop(arm: str, causes: list[str], budget: int = 0, history: str = "") -> int:
    """Log the final error (no restart follows) and return FINAL."""
    if budget:
        lines = "\n  ".join(causes)
        log.error(
            "arm %s stopped: %d attempts in a row failed without a newer committed checkpoint (the restart budget, "
            "%s=%d); their causes, oldest first:\n  %s\nHistory: %s. Fix the cause, then train the arm again (a new "
            "job starts a new count; it resumes from the newest committed checkpoint).",
            arm, len(causes), BUDGET_ENV, budget, lines, history,
        )  # fmt: skip
    else:
        log.error("arm %s stopped on an error a restart cannot fix (not retried): %s", arm, "; ".join(causes))
    return FINAL


def attempt_budget(env: Mapping[str, str]) -> int:

    raw = env.get(BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_BUDGET
    if not raw.isdigit() or int(raw) < 1:
        fix = f"give a whole number of attempts, 1 or more (default {DEFAULT_BUDGET})"
        raise ConfigError(f"{BUDGET_ENV}={raw!r}: {fix}")
    return int(raw)


def check_run(run_uri: str, arm: str) -> str:
    """The arm's folder in the store, once the run, the arm and the run's prepared data are there; else a final
    error naming what is missing and the fix."""
    run = RunLayout(run_uri)
    if not store.exists(run.config):
        raise RunError(
            f"--run {run_uri}: no run there (its config.yaml is missing); check the URI, or start the run first "
            "(medrl run, or the pipeline's init step)"
        )
    _, cfg = study.load_run(run_uri)
    if arm not in cfg.arms:
        raise RunError(f"--arm {arm!r}: run {run.run_id} has no such arm; it has {', '.join(cfg.arms)}")
    if cfg.arms[arm].method != "none" and not store.is_committed(run.data):
        raise RunError(
            f"run {run.run_id} has no committed prepared data ({run.data}); run its prep step first (medrl run "
            "resumes the run and does it)"
        )
    return run.arm(arm).uri


def final_errors() -> tuple[type[BaseException], ...]:
    """Errors that the same input raises again: a restart cannot help. A store outage, a dead judge, an
    out-of-memory or a crashed kernel are not among them: those fall to the restart budget."""
    return (ConfigError, PrepError, LayoutError, RunError, NonFiniteError, ModelError, EngineStartError, ImportError)


def cause_of(err: BaseException) -> str:
    """The exception's type and the first line of its message (what the attempt history and the final error say).
    medrl's own messages name settings and files, never a record's text. Another library's may name a file, and an
    image's path can carry a patient id (MIMIC-CXR's do): there, an OSError keeps its reason alone and anything
    path-like becomes <path>.

    >>> cause_of(FileNotFoundError(2, "No such file or directory", "/data/p10000033/s5/img.jpg"))
    'FileNotFoundError: No such file or directory'
    >>> cause_of(RuntimeError("cannot identify image file '/data/p10000033/img.jpg'\\nmore"))
    'RuntimeError: cannot identify image file <path>'
    """
    if isinstance(err, OSError) and err.strerror and not isinstance(err, MedrlError):
        line = err.strerror
    else:
        lines = str(err).strip().splitlines()
        line = lines[0] if lines else ""
        if not isinstance(err, MedrlError):
            line = PATH_LIKE.sub("<path>", line)
    return f"{type(err).__name__}: {line}".rstrip(": ")[:CAUSE_CHARS]


def attempt_here(run_uri: str, arm: str) -> tuple[int, str]:
    """Train in this process; returns the exit status and, when it failed, the cause."""
    # As PID 1 of a container a process without a handler ignores SIGTERM; a preemption must end training.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        arm_steps.train_in_run(run_uri, arm)
    except final_errors() as err:
        log.error("arm %s stopped on an error a restart cannot fix: %s", arm, err)
        return FINAL, cause_of(err)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
        return code, f"stopped by signal {code - 128}" if code > 128 else f"exit {code}"
    except Exception as err:
        log.exception("arm %s: training failed", arm)
        return RANK_CRASHED, cause_of(err)
    return 0, ""


def train_rank(run_uri: str, arm: str, env: Mapping[str, str]) -> int:
    """One rank under torchrun/accelerate: train, and on a failure leave a note for the node's supervisor."""
    status, cause = attempt_here(run_uri, arm)
    if status not in (0, *PREEMPTED) and env.get(FAILURE_DIR_ENV):
        note = Path(env[FAILURE_DIR_ENV]) / f"rank-{env.get('RANK', '0')}.json"
        note.write_text(json.dumps({"final": status == FINAL, "cause": cause}) + "\n", encoding="utf-8")
    if status in PREEMPTED:
        raise SystemExit(status)
    return status


def _exit_on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def supervise_ranks(command: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    """Run the launcher as a child, pass SIGTERM/SIGINT on to it, and map how it ended to the exit status and the
    cause (the failed ranks' notes)."""
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
        notes = [_read_note(p) for p in sorted(Path(failures).iterdir())]
    if received:
        return 128 + received[0], f"stopped by signal {received[0]}"
    if code == 0:
        return 0, ""
    final = [n["cause"] for n in notes if n["final"]]
    if final:
        log.error("training stopped on an error a restart cannot fix (%s): not retried", "; ".join(final))
        return FINAL, final[0]
    causes = sorted({n["cause"] for n in notes})
    if code < 0:  # the launcher itself was killed by signal -code
        return 128 - code, "; ".join(causes) or f"the launcher was killed by signal {-code}"
    cause = "; ".join(causes) or f"a rank ended without an error of its own (launcher exit {code}; an OOM kill?)"
    log.error("a rank failed (launcher exit %d): %s", code, cause)
    return RANK_CRASHED, cause


def _read_note(path: Path) -> dict[str, Any]:
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
        return {"final": bool(note.get("final")), "cause": str(note.get("cause") or "")[:CAUSE_CHARS]}
    except (OSError, ValueError):
        return {"final": False, "cause": f"{path.name}: unreadable note"}


class Attempts:
    """One node's attempts at an arm, kept in the run's folder in the store (`<arm>/attempts/node-<K>.json`, a JSON
    list rewritten whole by that node alone), so a recreated pod reads what its predecessors did."""

    def __init__(self, arm_uri: str, node: int = 0, nodes: int = 1, launch: str = ""):

        self.arm_uri, self.nodes, self.launch = arm_uri, nodes, launch
        self.uri = store.join(arm_uri, "attempts", f"node-{node}.json")
        self.records: list[dict[str, Any]] = []

    @property
    def number(self) -> int:
        return len(self.records)

    def checkpoint(self) -> int:
        """The newest committed checkpoint's step (-1: none yet)."""

        newest = checkpoints.latest_committed(store.join(self.arm_uri, "checkpoints"), self.nodes)
        return newest[0] if newest else -1

    def _load(self) -> None:

        try:
            self.records = json.loads(store.read_text(self.uri)) if store.exists(self.uri) else []
        except ValueError:
            log.warning("attempt history %s is unreadable; starting a new one", self.uri)
            self.records = []

    def _save(self) -> None:

        store.write_text(self.uri, json.dumps(self.records, indent=1) + "\n")

    def begin(self) -> None:
        """Record this attempt's start; an earlier attempt with no end record was killed without a word."""
        self._load()
        step = self.checkpoint()
        if self.records and self.records[-1].get("status") is None:
            self.records[-1].update(
                status=RANK_CRASHED,
                cause="ended without a record (the container was killed: an OOM kill, or its node was lost)",
                checkpoint=step,
            )
        self.records.append(
            {
                "attempt": len(self.records) + 1,
                "launch": self.launch,
                "started": _now(),
                "status": None,
                "checkpoint": step,
            }
        )
        self._save()

    def end(self, status: int, cause: str) -> None:
        self.records[-1].update(status=status, cause=cause, ended=_now(), checkpoint=self.checkpoint())
        self._save()

    def _streak(self) -> list[dict[str, Any]]:
        """The failed attempts of this job since the newest checkpoint was first seen, oldest first (preemptions left
        out)."""
        newest = self.records[-1]["checkpoint"] if self.records else -1
        streak = []
        for rec in reversed(self.records):
            if rec.get("status") == 0 or rec.get("checkpoint") != newest or rec.get("launch", "") != self.launch:
                break
            if rec.get("status") is not None and rec["status"] not in PREEMPTED:
                streak.append(rec)
        return streak[::-1]

    def failures(self) -> int:
        return len(self._streak())

    def spent(self, budget: int) -> bool:
        return self.failures() >= budget

    def causes(self, budget: int) -> list[str]:
        return [f"attempt {r['attempt']} (exit {r['status']}): {r.get('cause') or 'no cause recorded'}"
                for r in self._streak()[-budget:]]  # fmt: skip


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
