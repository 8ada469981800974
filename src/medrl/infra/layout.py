"""Where a run's artifacts live: `<store>/<experiment>/<run_id>/` (see DESIGN.md, Run artifacts)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from medrl.infra.store import join


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class ArmLayout:
    uri: str

    @property
    def model(self) -> str:
        return join(self.uri, "model")

    @property
    def checkpoints(self) -> str:
        return join(self.uri, "checkpoints")

    def checkpoint(self, step: int) -> str:
        return join(self.checkpoints, f"step-{step}")

    @property
    def train_log(self) -> str:
        return join(self.uri, "train_log.jsonl")

    @property
    def predictions(self) -> str:
        return join(self.uri, "predictions.jsonl")

    @property
    def metrics(self) -> str:
        return join(self.uri, "metrics.json")


@dataclass(frozen=True)
class RunLayout:
    uri: str

    @classmethod
    def create(cls, store: str, experiment: str, run_id: str) -> RunLayout:
        return cls(join(store, experiment, run_id))

    @property
    def run_id(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def config(self) -> str:
        return join(self.uri, "config.yaml")

    @property
    def data(self) -> str:
        return join(self.uri, "data")

    @property
    def base_model(self) -> str:
        return join(self.uri, "base-model")

    def arm(self, name: str) -> ArmLayout:
        return ArmLayout(join(self.uri, "arms", name))

    @property
    def report(self) -> str:
        return join(self.uri, "report")
