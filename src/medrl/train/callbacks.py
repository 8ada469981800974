"""The trainer callbacks medrl adds to every trainer (`medrl.train.common.training_callbacks()`): checkpoints
committed and uploaded to the store, weights restored on resume, and the one that feeds Prometheus.

Checkpoints: each rank saves its part, CheckpointCommit commits the folder once every rank is done (store protocol:
medrl.store.checkpoints), CheckpointUpload copies a snapshot of it to the store off the training thread.

Prometheus: training gauges, and /metrics on every node when a port is set.

Every training pod serves /metrics (the PodMonitor scrapes each one; Prometheus tells them apart by their `pod`
label): each node's local rank 0 serves its process's metrics and its own progress (running, last step time,
global step, GPU memory). The world's rank 0 alone counts steps and samples and records TRL's log values, so that
sums over pods do not count a step once per node. `medrl.train.common.training_callbacks()` hands this callback to
every trainer, with the arm it trains.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import TypeVar

from transformers import TrainerCallback

import medrl.metrics.judge  # noqa: F401 (registers the judge's counters: /metrics shows them at zero until a judge runs)
from medrl import metrics, store
from medrl.store.checkpoints import (
    Node,
    Part,
    Target,
    checkpoints,
    commit_checkpoint,
    commit_local,
    is_complete,
    local_uri,
)

log = logging.getLogger("medrl.checkpoints")


class PrometheusExporter(TrainerCallback):
    """Feeds the training gauges from trainer events and TRL's log records; serves /metrics when a port is set."""

    def __init__(self, arm: str, port: int | None = None):
        self.recorder = metrics.TrainingRecorder(arm)
        self.port = port

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_local_process_zero:
            return
        if self.port is not None:
            metrics.serve(self.port)
        self.recorder.begin(state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            samples = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            self.recorder.step(state.global_step, samples)
        elif state.is_local_process_zero:
            self.recorder.progress(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.recorder.log(logs)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_local_process_zero:
            self.recorder.end()


class CheckpointError(store.StoreError):
    """A checkpoint could not be uploaded, or the nodes of a run disagree on the one they resumed from."""


T = TypeVar("T")


def _gather(value: T) -> list[T]:
    """Every rank's `value`, in rank order ([value] when not distributed). A collective: every rank must call it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    found: list = [None] * dist.get_world_size()
    dist.all_gather_object(found, value)
    return found


class CheckpointCommit(TrainerCallback):
    """Commits each checkpoint after every rank saved its part, then keeps the newest `keep` committed ones.

    Each node's local rank 0 commits its node's folder: with several nodes, every node holds the files of its own
    ranks. Rotation happens here, after the commit, rather than in the trainer (which deletes before the new
    checkpoint is complete): a crash at any moment leaves at least one committed checkpoint behind.
    """

    def __init__(self, keep: int):
        self.keep = keep

    def on_train_begin(self, args, state, control, **kwargs):
        # Folders a crash left half-written would mix stale files into the next save of the same step; a commit
        # cut short leaves the store's hidden staging and trash folders.
        if state.is_local_process_zero:
            root = Path(args.output_dir)
            torn = [p for p in checkpoints(root) if not is_complete(p)]
            leftovers = (".staging-checkpoint-", ".trash-checkpoint-", ".saved-checkpoint-")
            if root.is_dir():
                torn += [p for p in root.iterdir() if p.name.startswith(leftovers)]
            for path in torn:
                shutil.rmtree(path, ignore_errors=True)

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # every rank has written its RNG state and optimizer shard
        if state.is_local_process_zero:
            commit_local(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            committed = [p for p in checkpoints(Path(args.output_dir)) if is_complete(p)]
            for old in committed[: -self.keep]:
                store.delete(local_uri(old))  # the marker goes first: never a half-deleted committed checkpoint
        PartialState().wait_for_everyone()


def snapshot(source: Path, dest: Path) -> Path:
    """A frozen view of a committed local checkpoint for a background upload: hard links (no bytes copied, so the
    save does not stall), a copy only where links cannot be made (another filesystem). The trainer never rewrites a
    committed checkpoint's files in place, and rotation unlinks them, which leaves the links whole."""
    shutil.rmtree(dest, ignore_errors=True)
    skip = shutil.ignore_patterns(store.MANIFEST, store.COMMITTED)  # the store's commit writes its own
    try:
        shutil.copytree(source, dest, copy_function=os.link, ignore=skip)
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(source, dest, ignore=skip)
    return dest


class CheckpointUpload(TrainerCallback):
    """Commits each checkpoint the trainer saves to the store while training goes on, keeping the newest K.

    On save, each node's local rank 0 snapshots its node's committed checkpoint (hard links) and a background thread
    uploads it: the whole checkpoint for one node, that node's part for several (see `Part`). One upload is in flight
    per node: the next save waits for it. An upload that failed stops training at the next save, or at the end, on
    every rank at once, with an error naming the step and the store; the job's restart then resumes from the newest
    complete checkpoint.
    """

    def __init__(self, target: Target, scratch: Path, node: Node | None = None):
        self.target = target
        self.scratch = Path(scratch)
        self.node = node or Node.from_env()
        self.token = uuid.uuid4().hex[:12]
        self._thread: threading.Thread | None = None
        self.uploaded: list[int] = []
        self.failed: list[int] = []
        self._error: str | None = None

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.node.count == 1:
            return
        found = _gather((self.token, state.global_step))
        self.token = found[0][0]  # world rank 0's: one attempt, one token on every node
        resumed = sorted({step for _, step in found})
        if len(resumed) > 1:
            raise CheckpointError(
                f"the nodes resumed from different steps {resumed}: a checkpoint changed in the store while they "
                "started; restart the job (each node then takes the newest checkpoint complete in the store)"
            )

    def _surface(self) -> None:
        """Collective: every rank raises if any node's last upload failed."""
        self.wait()
        mine, self._error = self._error, None
        failures = [f for f in _gather(mine) if f]
        if failures:
            raise CheckpointError(f"{failures[0]}; training stops so that the job restarts from the newest one")

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank has written its shards before the node's rank 0 snapshots the folder
        self._surface()
        if not state.is_local_process_zero:
            return
        step = state.global_step
        source = Path(args.output_dir) / f"checkpoint-{step}"
        if not is_complete(source):
            log.warning("checkpoint of step %d is not committed where the trainer saves; not uploaded", step)
            return
        frozen = snapshot(source, self.scratch / f"step-{step}")
        self._thread = threading.Thread(target=self._upload, args=(frozen, step), name="medrl-ckpt", daemon=True)
        self._thread.start()

    def _upload(self, frozen: Path, step: int) -> None:
        try:
            if self.node.count == 1:
                uri = commit_checkpoint(frozen, self.target.uri, step, self.target.keep)
            else:
                part = Part(self.node.index, self.node.count, self.token)
                uri = commit_checkpoint(frozen, self.target.uri, step, self.target.keep, part=part)
            self.uploaded.append(step)
            log.info("checkpoint step-%d committed to %s", step, uri)
        except Exception as err:
            self.failed.append(step)
            self._error = f"checkpoint step-{step} was not uploaded to {self.target.uri}: {err}"
            log.error("%s; training stops at the next save", self._error)
        finally:
            shutil.rmtree(frozen, ignore_errors=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._surface()


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
