"""One arm as the report tables see it: its results, and how they read in a table cell."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ArmResult:
    name: str
    label: str
    method: str
    train_rows: int | None
    metrics: dict
    train_log: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)  # slim rows: id, correct, think_tokens, metric values
    # An untrained arm of a study run over several seeds: its one evaluation, repeated under every seed's tag so that
    # each seed's trained arms pair with it (medrl.report.seeds.pool)
    repeated: bool = False
    # A trained arm pooled over seeds: each seed's train_log (seed -> rows); its train_log is then empty, since no
    # one seed's log is the arm's (medrl.report.figures draws a line per seed)
    seed_logs: dict[int, list[dict]] = field(default_factory=dict)


def cell(metric: dict | None, scale: float, show_std: bool) -> str:
    """'58.04' or '0.21 (± 0.24)'; '-' when not measured, 'n/a' when its model is not available here.

    >>> cell({"mean": 0.5804, "std": 0.49}, 100.0, False), cell({"mean": 0.21, "std": 0.24}, 1.0, True)
    ('58.04', '0.21 (± 0.24)')
    >>> cell(None, 1.0, True), cell({"mean": None, "status": "unavailable"}, 1.0, True)
    ('-', 'n/a')
    >>> cell({"mean": None, "n": 0, "missing": 8, "status": "unscored"}, 1.0, True)
    'unscored'
    >>> cell({"mean": 7.5, "std": 1.0, "status": "incomplete", "proxy": True}, 1.0, True)
    '7.50 (± 1.00) *†'
    """
    if not metric:
        return "-"
    if metric.get("status") == "unavailable":
        return "n/a"
    if metric.get("status") == "unscored":
        return "unscored"  # the judge scored no answer: a number would hide that
    if metric.get("mean") is None:
        return "-"
    text = f"{metric['mean'] * scale:.2f}"
    if show_std and metric.get("std") is not None:
        text += f" (± {metric['std'] * scale:.2f})"
    marks = ("*" if metric.get("status") == "incomplete" else "") + ("†" if metric.get("proxy") else "")
    return f"{text} {marks}" if marks else text


def data_scale(arm: ArmResult) -> str:
    """The "Fine-tuning data" column: how many training rows the arm saw; '-' for an untrained arm."""
    return "-" if arm.method == "none" or arm.train_rows is None else f"{arm.train_rows:,}"
