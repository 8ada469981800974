"""Build `report.md` and `figures/*.png` from every arm's metrics.json and train_log.jsonl."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# (metrics.json key, column title, scale, show std). Accuracy is a percentage, as in the paper.
COLUMNS = [
    ("accuracy", "Accuracy ↑", 100.0, False),
    ("similarity", "Similarity ↑", 1.0, True),
    ("perplexity", "Perplexity ↓", 1.0, True),
    ("thinking_reward", "Thinking reward ↑", 1.0, True),
    ("think_tokens", "Thinking token length", 1.0, True),
]


@dataclass
class ArmResult:
    name: str
    label: str
    method: str
    train_rows: int | None
    metrics: dict
    train_log: list[dict] = field(default_factory=list)


def cell(metric: dict | None, scale: float, show_std: bool) -> str:
    """'58.04' or '0.21 (± 0.24)'; '-' when the metric was not measured.

    >>> cell({"mean": 0.5804, "std": 0.49}, 100.0, False), cell({"mean": 0.21, "std": 0.24}, 1.0, True)
    ('58.04', '0.21 (± 0.24)')
    >>> cell(None, 1.0, True)
    '-'
    """
    if not metric or metric.get("mean") is None:
        return "-"
    text = f"{metric['mean'] * scale:.2f}"
    if show_std and metric.get("std") is not None:
        text += f" (± {metric['std'] * scale:.2f})"
    return text


def table1(arms: list[ArmResult]) -> str:
    header = ["Model", "Fine-tuning data", *(title for _, title, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        data = "-" if arm.method == "none" or arm.train_rows is None else f"{arm.train_rows:,}"
        cells = [cell(arm.metrics.get(key), scale, std) for key, _, scale, std in COLUMNS]
        lines.append("| " + " | ".join([arm.label, data, *cells]) + " |")
    return "\n".join(lines)


def reward_curve(arms: list[ArmResult], path: Path) -> bool:
    """Mean reward per step of every RL arm; False when no arm logged a reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    drawn = False
    for arm in arms:
        points = [(r["step"], r["reward"]) for r in arm.train_log if "reward" in r]
        if points:
            steps, rewards = zip(*points, strict=True)
            ax.plot(steps, rewards, label=arm.label, linewidth=1.5)
            drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward")
        ax.set_title("GRPO reward during training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    plt.close(fig)
    return drawn


def build_report(title: str, arms: list[ArmResult], out_dir: Path) -> Path:
    """Write report.md (and figures/) into `out_dir`; returns the path of report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", "", "## Table 1", "", table1(arms), ""]
    parts.append(
        "Accuracy: share of test questions whose final `<answer>` names the reference option (percent). "
        "Thinking token length: tokens inside `<think>`. Other cells: mean (± std) over test questions; "
        "'-' where a metric was not measured."
    )
    from medrl.report.cxr import cxr_section

    parts += cxr_section(arms)  # chest X-ray report/grounding metrics, when an arm has them
    if reward_curve(arms, out_dir / "figures" / "reward_curve.png"):
        parts += ["", "## Training", "", "![GRPO reward](figures/reward_curve.png)"]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
