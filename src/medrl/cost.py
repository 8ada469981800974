"""What a step costs: wall time, CPU time (this process and its children, measured) and GPU time (wall time times
the GPUs the step holds). A study's cost is the sum over its steps, its wall time the span from the first step's
start to the last one's end (arms run side by side on a cluster)."""

from __future__ import annotations

import os
import resource
import time
from typing import Any


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def gpus_held() -> int:
    """GPUs the step holds: every process of a torchrun job (WORLD_SIZE) holds one when this process sees one."""
    try:
        import torch

        if not torch.cuda.is_available():
            return 0
    except Exception:
        return 0
    return int(os.environ.get("WORLD_SIZE", "1"))


class Meter:
    """Times a block: `with Meter() as m: ...`, then `m.record` holds started/ended (unix), wall, CPU and GPU
    seconds. CPU seconds are this process's (a torchrun job's other ranks are not counted)."""

    def __enter__(self) -> Meter:
        self.started, self._t0, self._cpu0 = time.time(), time.monotonic(), _cpu_seconds()
        self.record: dict[str, Any] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._t0
        gpus = gpus_held()
        self.record = {
            "started": self.started,
            "ended": self.started + wall,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(_cpu_seconds() - self._cpu0, 3),
            "gpus": gpus,
            "gpu_seconds": round(wall * gpus, 3),
        }


def total(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A study's cost from its steps' records: span of wall time, summed CPU and GPU seconds.

    >>> total([{"started": 0, "ended": 10, "wall_seconds": 10, "cpu_seconds": 15, "gpu_seconds": 0},
    ...        {"started": 5, "ended": 30, "wall_seconds": 25, "cpu_seconds": 20, "gpu_seconds": 100}])
    {'wall_seconds': 30.0, 'step_seconds': 35.0, 'cpu_seconds': 35.0, 'gpu_seconds': 100.0}
    """
    if not records:
        return {"wall_seconds": 0.0, "step_seconds": 0.0, "cpu_seconds": 0.0, "gpu_seconds": 0.0}
    return {
        "wall_seconds": float(max(r["ended"] for r in records) - min(r["started"] for r in records)),
        "step_seconds": float(sum(r["wall_seconds"] for r in records)),
        "cpu_seconds": float(sum(r["cpu_seconds"] for r in records)),
        "gpu_seconds": float(sum(r["gpu_seconds"] for r in records)),
    }
