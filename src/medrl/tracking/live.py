"""The arm's training metrics sent to its MLflow run while it trains, from a thread of its own, so that a slow or
dead server never holds a training step. What it has not sent when training ends, the train step sends from
train_log.jsonl afterwards (`StudyTracking.trained`)."""

from __future__ import annotations

import queue
import threading

from transformers import TrainerCallback

from medrl.tracking import StudyTracking, train_metrics

WAIT_S = 30.0  # at the end of training, for what is queued; the rest goes from the training log


class LiveLog(TrainerCallback):
    """TRL's log records (loss, rewards per function, KL, lengths, learning rate) as `train/<key>` per step, on the
    world's rank 0 only; steps up to `after` (already in the run, from an earlier attempt) are skipped."""

    def __init__(self, runs: StudyTracking, run_id: str, after: int = -1):
        self.runs, self.run_id, self.after = runs, run_id, after
        self.queue: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.thread is None:
            self.thread = threading.Thread(target=self._send, name="medrl-mlflow", daemon=True)
            self.thread.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.thread is not None and logs:
            values = train_metrics([{**logs, "step": state.global_step}], self.after)
            if values:
                self.queue.put(values)

    def on_train_end(self, args, state, control, **kwargs):
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(WAIT_S)
            self.stop.set()  # a call still in flight is the last one

    def _send(self) -> None:
        done = False
        while not done and not self.stop.is_set():
            batch = [self.queue.get()]
            while not self.queue.empty():  # what piled up while the last call ran goes in one call
                batch.append(self.queue.get_nowait())
            done = batch[-1] is None
            values = [v for item in batch if item for v in item]
            if values:
                self.runs.log_metrics(self.run_id, values, self.runs.sent_up_to(self.run_id))
