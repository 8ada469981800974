"""Training checkpoints, committed by the store's own commit: the trainer's local `checkpoint-N` folders, and their
copies in the store under `<arm>/checkpoints/step-N/`, the newest K kept.

A folder without the COMMITTED marker (a save or an upload that a crash cut short) is never resumed from and is
removed once a newer checkpoint is committed. Resume takes the newest committed local checkpoint; in a study, the
newest committed one in the store is first brought to the node (`restore_once`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from medrl.infra import store

log = logging.getLogger("medrl.checkpoints")

LOCAL_DIR = re.compile(r"checkpoint-(\d+)")  # the trainer's name, which its resume looks for
STEP_DIR = re.compile(r"step-(\d+)")


@dataclass(frozen=True)
class Target:
    """Where a training run's checkpoints go in the store: `uri` holds the step-N folders; `keep` of them are kept."""

    uri: str
    keep: int

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError(f"train.save_total_limit={self.keep}: keep at least one checkpoint")


# ------------------------------------------------------------------------------------- local checkpoints


def step_of(path: Path) -> int | None:
    """The step of a `checkpoint-N` folder, None for any other name.

    >>> step_of(Path("run/checkpoint-200")), step_of(Path("run/other"))
    (200, None)
    """
    m = LOCAL_DIR.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def local_uri(path: Path) -> str:
    return store.normalize(str(path))


def commit_local(path: Path) -> None:
    """Commit the checkpoint folder the trainer saved at `path` in place, through the store's commit: its files move
    (renames on one filesystem, no copy of the weights) into the store's staging folder, which then takes its
    place with MANIFEST.json and the COMMITTED marker."""
    path = Path(path)
    # The store never replaces a folder it did not commit, so the trainer's folder steps aside first (a rename in
    # medrl's own work folder), and its files move into the commit's staging folder.
    saved = path.with_name(f".saved-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, saved)
    with store.commit_dir(local_uri(path)) as staging:
        for item in saved.iterdir():
            os.replace(item, staging / item.name)
    saved.rmdir()


def is_complete(path: Path, verify: bool = False) -> bool:
    """Committed: the marker holds the manifest's sha256 and every listed file is there with its size; with
    `verify`, every file's sha256 is checked too (the store's verify)."""
    path = Path(path)
    try:
        if verify:
            store.verify_dir(path, local_uri(path))
            return True
        data = (path / store.MANIFEST).read_bytes()
        if (path / store.COMMITTED).read_text().strip() != store.marker_text(data).strip():
            return False
        files = json.loads(data)["files"]
        return all((path / rel).is_file() and (path / rel).stat().st_size == m["size"] for rel, m in files.items())
    except (OSError, ValueError, KeyError):
        return False
    except store.StoreError as err:  # a file that does not match its sha256; the message names no file
        log.warning("checkpoint %s is damaged: %s", path.name, err)
        return False


def checkpoints(directory: Path) -> list[Path]:
    """Every `checkpoint-N` folder under `directory`, oldest step first (complete or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def latest_checkpoint(directory: Path, verify: bool = False) -> Path | None:
    """The committed checkpoint with the highest step under `directory`, or None."""
    for path in reversed(checkpoints(directory)):
        if is_complete(path, verify=verify):
            return path
    return None


# ------------------------------------------------------------------------------------- in the store


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
        if store.is_committed(local_uri(local)):
            return local
        return restore_latest(uri, work_dir / "checkpoints")


# ------------------------------------------------------------------------------------- trainer callbacks


class CheckpointCommit(TrainerCallback):
    """Commits each checkpoint after every rank saved its part, then keeps the newest `keep` committed ones.

    Rotation happens here, after the commit, rather than in the trainer (which deletes before the new checkpoint
    is complete): a crash at any moment leaves at least one committed checkpoint behind.
    """

    def __init__(self, keep: int):
        self.keep = keep

    def on_train_begin(self, args, state, control, **kwargs):
        # Folders a crash left half-written would mix stale files into the next save of the same step; a commit
        # cut short leaves the store's hidden staging and trash folders.
        if state.is_world_process_zero:
            root = Path(args.output_dir)
            torn = [p for p in checkpoints(root) if not is_complete(p)]
            if root.is_dir():
                torn += [p for p in root.iterdir() if p.name.startswith((".staging-checkpoint-", ".trash-checkpoint-"))]
            for path in torn:
                shutil.rmtree(path, ignore_errors=True)

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # every rank has written its RNG state and optimizer shard
        if state.is_world_process_zero:
            commit_local(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            committed = [p for p in checkpoints(Path(args.output_dir)) if is_complete(p)]
            for old in committed[: -self.keep]:
                store.delete(local_uri(old))  # the marker goes first: never a half-deleted committed checkpoint
        PartialState().wait_for_everyone()


class CheckpointUpload(TrainerCallback):
    """Commits each checkpoint the trainer saves to the store while training goes on, keeping the newest K.

    On save, the checkpoint folder is copied aside (the trainer may delete or rewrite its folders at the next
    save) and a background thread commits the copy; one upload is in flight at a time, so a slow store holds
    the next save back instead of piling up copies. A failed upload is logged and the next save tries again.
    """

    def __init__(self, target: Target, scratch: Path):
        self.target = target
        self.scratch = Path(scratch)
        self._thread: threading.Thread | None = None
        self.uploaded: list[int] = []
        self.failed: list[int] = []

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank has written its shards before rank 0 copies the folder
        if not state.is_world_process_zero:
            return
        self.wait()
        step = state.global_step
        source = Path(args.output_dir) / f"checkpoint-{step}"
        if not source.is_dir():
            log.warning("checkpoint of step %d not found where the trainer saves; not uploaded", step)
            return
        snapshot = self.scratch / f"step-{step}"
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(source, snapshot)
        self._thread = threading.Thread(target=self._upload, args=(snapshot, step), name="medrl-ckpt", daemon=True)
        self._thread.start()

    def _upload(self, snapshot: Path, step: int) -> None:
        try:
            uri = commit_checkpoint(snapshot, self.target.uri, step, self.target.keep)
            self.uploaded.append(step)
            log.info("checkpoint step-%d committed to %s", step, uri)
        except Exception as err:
            self.failed.append(step)
            log.error("checkpoint step-%d was not uploaded (training goes on): %s", step, err)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def on_train_end(self, args, state, control, **kwargs):
        self.wait()


def restore_weights(model, checkpoint: Path) -> None:
    """Load a checkpoint's full weights into `model` the way `from_pretrained` reads them.

    The trainer's resume reads model.safetensors with a plain, non-strict `load_state_dict`. Vision-language models
    are saved under their original key names (`model.layers.*`, where the class has `model.language_model.*`), so
    that load silently skips the language model and training would go on from the initial weights
    (transformers#43701, open in 5.23). Reading the checkpoint with `from_pretrained` applies the key conversion;
    a strict load then fails loudly if anything is still missing.
    """
    import torch

    loaded = type(model).from_pretrained(str(checkpoint), dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded


class ResumeWeights(TrainerCallback):
    """Restores the weights of the checkpoint a run resumes from, after the trainer's own (partial) load."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # DeepSpeed restores the module from its own files, in the model's key names; PEFT checkpoints hold
        # adapters only, which the trainer loads through peft.
        if args.deepspeed or not (self.checkpoint / "model.safetensors").is_file():
            return
        restore_weights(model, self.checkpoint)
        log.info("resumed weights from %s (full key conversion)", self.checkpoint.name)
