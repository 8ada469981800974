"""The report's Cost section: wall time, CPU-hours and GPU-hours of each arm and of the whole study."""

from __future__ import annotations

from typing import Any


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.3f}"


def _wall(seconds: float | None) -> str:
    """
    >>> _wall(59.5), _wall(3725), _wall(None)
    ('60 s', '1 h 02 min', '-')
    """
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def cost_blocks(cost: dict[str, Any] | None, labels: dict[str, str]) -> list[tuple]:
    """Report blocks for study.study_cost's document (none without one)."""
    if not cost:
        return []
    header = ["Step", "Training wall time", "Evaluation wall time", "CPU-hours", "GPU-hours"]
    rows = []
    prep = cost.get("prep")
    if prep:
        rows.append(
            ["data (prep)", _wall(prep["wall_seconds"]), "-", _hours(prep["cpu_seconds"]), _hours(prep["gpu_seconds"])]
        )
    for arm, doc in (cost.get("arms") or {}).items():
        steps = [doc[s] for s in ("train", "evaluate") if s in doc]
        if not steps:
            continue
        train, evaluate = doc.get("train"), doc.get("evaluate")
        rows.append([
            labels.get(arm, arm),
            _wall(train["wall_seconds"]) if train else "-",
            _wall(evaluate["wall_seconds"]) if evaluate else "-",
            _hours(sum(r["cpu_seconds"] for r in steps)),
            _hours(sum(r["gpu_seconds"] for r in steps)),
        ])  # fmt: skip
    study = cost.get("study") or {}
    rows.append([
        "**study**",
        f"{_wall(study.get('wall_seconds'))} end to end ({_wall(study.get('step_seconds'))} of steps)",
        "",
        _hours(study.get("cpu_seconds")),
        _hours(study.get("gpu_seconds")),
    ])  # fmt: skip
    note = (
        "CPU-hours: CPU time the step's process and its children used (under torchrun, rank 0's only). GPU-hours: "
        "wall time times the GPUs the step held (0 on a CPU). The study's wall time runs from prep's start to the "
        "last arm's end; arms that ran side by side overlap in it. A step that was resumed counts its last attempt."
    )
    return [("h2", "Cost"), ("table", header, rows, "cost"), ("p", note)]
