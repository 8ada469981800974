"""Training checkpoints in the store: `<arm>/checkpoints/step-N/`, committed one by one, the newest K kept.

A torn upload has no COMMITTED marker: it is never restored, and it is removed once a newer checkpoint is
committed. `restore_latest` puts the newest committed checkpoint where the trainer resumes from.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from medrl.infra import store

log = logging.getLogger("medrl.checkpoints")

STEP_DIR = re.compile(r"step-(\d+)")


@dataclass(frozen=True)
class Target:
    """Where a training run's checkpoints go: `uri` holds the step-N folders; `keep` of them are kept."""

    uri: str
    keep: int


_TARGET: ContextVar[Target | None] = ContextVar("medrl_checkpoint_target", default=None)


@contextlib.contextmanager
def upload_to(uri: str, keep: int) -> Iterator[Target]:
    """While active, trainers built with `training_callbacks()` commit each checkpoint they save to `uri`."""
    if keep < 1:
        raise ValueError(f"train.save_total_limit={keep}: keep at least one checkpoint")
    token = _TARGET.set(Target(uri, keep))
    try:
        yield _TARGET.get()  # type: ignore[misc]
    finally:
        _TARGET.reset(token)


def active_target() -> Target | None:
    return _TARGET.get()


def steps(uri: str) -> list[tuple[int, str]]:
    """(step, URI) of every step-N folder under `uri`, committed or not, oldest first."""
    found = []
    for name in store.list_dir(uri):
        match = STEP_DIR.fullmatch(name)
        if match:
            found.append((int(match.group(1)), store.join(uri, name)))
    return sorted(found)


def commit_checkpoint(local: Path, uri: str, step: int, keep: int) -> str:
    """Commit the local checkpoint folder as `uri/step-N`, then prune; returns the checkpoint's URI."""
    dest = store.join(uri, f"step-{step}")
    store.commit_from(local, dest)
    prune(uri, keep)
    return dest


def prune(uri: str, keep: int) -> list[str]:
    """Delete committed checkpoints beyond the newest `keep`, and torn ones older than the newest committed."""
    found = steps(uri)
    committed = [(n, u) for n, u in found if store.is_committed(u)]
    if not committed:
        return []
    kept = {u for _, u in committed[-keep:]}
    newest = committed[-1][0]
    removed = []
    for n, u in found:
        if u in kept or n > newest:  # a newer uncommitted folder may still be on its way up
            continue
        store.delete(u)
        removed.append(u)
    if removed:
        log.info("checkpoints: removed %s", ", ".join(u.rsplit("/", 1)[-1] for u in removed))
    return removed


def latest_committed(uri: str) -> tuple[int, str] | None:
    """The newest committed checkpoint under `uri` as (step, URI), or None."""
    for n, u in reversed(steps(uri)):
        if store.is_committed(u):
            return n, u
        log.warning("checkpoint step-%d under %s is not committed (a torn upload); looking further back", n, uri)
    return None


def restore_latest(uri: str, dest_dir: Path) -> Path | None:
    """Download the newest committed checkpoint under `uri` into `dest_dir/checkpoint-N` (verified); returns
    that folder, or None when there is none. `checkpoint-N` is the name the trainer's resume looks for."""
    found = latest_committed(uri)
    if found is None:
        return None
    step, src = found
    path = store.download(src, Path(dest_dir) / f"checkpoint-{step}")
    log.info("restored checkpoint step-%d from %s", step, uri)
    return path


def restore_once(uri: str, work_dir: Path) -> Path | None:
    """Make the newest committed checkpoint under `uri` available in `work_dir/checkpoints`, where the trainer
    resumes from. Every rank of a node may call this: a file lock lets the first download it and the others find
    it there; a local checkpoint of that step (an earlier attempt on this machine) is not downloaded again."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / ".restore.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = latest_committed(uri)
        if found is None:
            return None
        local = work_dir / "checkpoints" / f"checkpoint-{found[0]}"
        if (local / store.COMMITTED).is_file():
            return local
        return restore_latest(uri, work_dir / "checkpoints")
