"""Trainer callbacks that tie a training run to the infrastructure: /metrics on rank 0, checkpoint upload.

Both act on the world's rank 0 only; `medrl.train.common.training_callbacks()` hands them to every trainer.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from transformers import TrainerCallback

from medrl.infra import checkpoint_store, metrics

log = logging.getLogger("medrl.train")


class PrometheusExporter(TrainerCallback):
    """Feeds the training gauges from trainer events and TRL's log records; serves /metrics when a port is set."""

    def __init__(self, arm: str = "default", port: int | None = None):
        self.recorder = metrics.TrainingRecorder(arm)
        self.port = port

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.port is not None:
            metrics.serve(self.port)
        self.recorder.begin(state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            samples = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            self.recorder.step(state.global_step, samples)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.recorder.log(logs)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.recorder.end()


class CheckpointUpload(TrainerCallback):
    """Commits each checkpoint the trainer saves to the store while training goes on, keeping the newest K.

    On save, the checkpoint folder is copied aside (the trainer may delete or rewrite its folders at the next
    save) and a background thread commits the copy; one upload is in flight at a time, so a slow store holds
    the next save back instead of piling up copies. A failed upload is logged and the next save tries again.
    """

    def __init__(self, target: checkpoint_store.Target, scratch: Path):
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
            uri = checkpoint_store.commit_checkpoint(snapshot, self.target.uri, step, self.target.keep)
            self.uploaded.append(step)
            log.info("checkpoint step-%d committed to %s", step, uri)
        except Exception as err:
            self.failed.append(step)
            log.error("checkpoint step-%d was not uploaded (training goes on): %s", step, err)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def on_train_end(self, args, state, control, **kwargs):
        self.wait()
