"""The trainer callback that feeds Prometheus: training gauges, and /metrics on every node when a port is set.

Every training pod serves /metrics (the PodMonitor scrapes each one; Prometheus tells them apart by their `pod`
label): each node's local rank 0 serves its process's metrics and its own progress (running, last step time,
global step, GPU memory). The world's rank 0 alone counts steps and samples and records TRL's log values, so that
sums over pods do not count a step once per node. `medrl.train.common.training_callbacks()` hands this callback to
every trainer, with the arm it trains (checkpoint callbacks: medrl.store.checkpoints).
"""

from __future__ import annotations

from transformers import TrainerCallback

from medrl import metrics


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
