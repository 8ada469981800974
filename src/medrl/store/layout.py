"""Where a run's artifacts live: `<store>/<experiment>/<run_id>/` (see DESIGN.md, Run artifacts)."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from medrl import store
from medrl.errors import MedrlError
from medrl.store import join

# Names become path segments and object keys: no separators, no `..`, nothing a shell or S3 treats specially.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class LayoutError(MedrlError, ValueError):
    """A run id, experiment or arm name that cannot name a folder safely: the user's to fix, so the command line
    prints it as `error: ...` and exits 2 (a ValueError still, so that pydantic reports it inside a config)."""


def check_name(value: str, what: str) -> str:
    """`value` if it is a safe folder name, else LayoutError naming `what` (the setting or flag) and the rule.

    >>> check_name("20261121-120000-ab12", "run_id")
    '20261121-120000-ab12'
    """
    if not isinstance(value, str) or not NAME.fullmatch(value) or ".." in value:
        raise LayoutError(
            f"{what} {value!r}: use 1-128 letters, digits, '.', '_' and '-', starting with a letter or digit "
            "(no '/', no '..', no spaces)"
        )
    return value


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

    @property
    def cost(self) -> str:
        return join(self.uri, "cost.json")


@dataclass(frozen=True)
class RunLayout:
    uri: str

    @classmethod
    def create(cls, store: str, experiment: str, run_id: str) -> RunLayout:
        return cls(join(store, check_name(experiment, "experiment"), check_name(run_id, "run_id")))

    def lease(self, ttl: float | None = None) -> store.Lease:
        """Hold this run id while the run writes it (a context manager): a second run with the same id stops
        with a LeaseError; a crashed run's lease lapses `ttl` seconds after its last renewal."""
        return store.acquire_lease(self.uri, ttl=ttl)

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

    @property
    def provenance(self) -> str:
        return join(self.uri, "provenance.json")

    @property
    def prep_cost(self) -> str:
        return join(self.uri, "prep-cost.json")

    def arm(self, name: str) -> ArmLayout:
        return ArmLayout(join(self.uri, "arms", check_name(name, "arm")))

    @property
    def report(self) -> str:
        return join(self.uri, "report")
