"""The report's figures (PNG, matplotlib Agg): training curves from train_log.jsonl and accuracy against reasoning
length from predictions.jsonl. Each function returns False and writes nothing when it has nothing to draw.
"""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(log: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in log if key in r and "step" in r]
    return [p[0] for p in points], [p[1] for p in points]


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


_SEED_STYLES = ("-", "--", ":", "-.")


def training_lines(arms, key: str) -> list[tuple[str, str, str, list[float], list[float]]]:
    """(label, colour, line style, steps, values) of each line a training figure draws for `key`: one per arm, and
    for an arm pooled over seeds one per seed, in the arm's colour, a line style per seed. Each seed's own curve
    rather than a mean with a band: seeds may log different steps (one stopped early), and a band over three runs
    would look more certain than it is.

    >>> from medrl.report.arm import ArmResult
    >>> one = ArmResult("a", "A", "grpo", 8, {}, [{"step": 1, "kl": 0.5}])
    >>> two = ArmResult("b", "B", "grpo", 8, {}, seed_logs={0: [{"step": 1, "kl": 0.1}], 1: [{"step": 1, "kl": 0.2}]})
    >>> [(label, colour, style, values) for label, colour, style, _, values in training_lines([one, two], "kl")]
    [('A', 'C0', '-', [0.5]), ('B (seed 0)', 'C1', '-', [0.1]), ('B (seed 1)', 'C1', '--', [0.2])]
    """
    lines = []
    for i, arm in enumerate(arms):
        color = f"C{i % 10}"  # an arm keeps its colour in every figure
        runs = [(f"{arm.label} (seed {seed})", log) for seed, log in arm.seed_logs.items()]
        runs = runs or [(arm.label, arm.train_log)]
        for j, (label, log) in enumerate(runs):
            steps, values = _series(log, key)
            if steps:
                lines.append((label, color, _SEED_STYLES[j % len(_SEED_STYLES)], steps, values))
    return lines


def curve(arms, key: str, ylabel: str, title: str, path: Path) -> bool:
    """One line per arm (per seed of an arm run over several) of a logged training value against the step (a
    moving mean when the log is long)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    lines = training_lines(arms, key)
    for label, color, style, steps, values in lines:
        window = max(1, len(values) // 50)
        if window > 1:
            ax.plot(steps, values, alpha=0.25, linewidth=0.8, color=color, linestyle=style)
            smooth = _smooth(values, window)
            ax.plot(steps, smooth, label=f"{label} (mean of {window})", linewidth=1.5, color=color, linestyle=style)
        else:
            marker = "o" if len(steps) < 30 else None
            ax.plot(steps, values, label=label, linewidth=1.5, marker=marker, color=color, linestyle=style)
    drawn = bool(lines)
    if drawn:
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _save(fig, path)
    plt.close(fig)
    return drawn


def rewards_by_function(arms, path: Path) -> bool:
    """A panel per reward function (TRL's rewards/<name>/mean), a line per arm (per seed of an arm run over several)."""
    names = sorted(
        {
            k.split("/")[1]
            for arm in arms
            for log in (arm.train_log, *arm.seed_logs.values())
            for r in log
            for k in r
            if k.startswith("rewards/") and k.endswith("/mean")
        }
    )
    if not names:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1, 3.2), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for label, color, style, steps, values in training_lines(arms, f"rewards/{name}/mean"):
            smooth = _smooth(values, max(1, len(values) // 50))
            ax.plot(steps, smooth, label=label, linewidth=1.3, color=color, linestyle=style)
        ax.set(title=name, xlabel="step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean reward")
    axes[0][-1].legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return True


def length_bins(lengths: list[float], bins: int = 5) -> list[float]:
    """Edges that split the pooled reasoning lengths into about equal groups (fewer when lengths repeat).

    >>> length_bins([0, 0, 0, 10, 20, 30, 40, 50], 4)
    [0.0, 15.0, 32.5, 50.0]
    """
    import numpy as np

    if not lengths:
        return []
    edges = np.unique(np.quantile(np.asarray(lengths, dtype=float), np.linspace(0, 1, bins + 1)))
    return [float(e) for e in edges]


def accuracy_by_length(arms, bins: int = 5) -> dict:
    """Per arm, accuracy within reasoning-length groups shared by all arms: {arm: [(median length, acc, n)]}."""
    import numpy as np

    pooled = [float(r["think_tokens"]) for arm in arms for r in arm.predictions if "think_tokens" in r]
    edges = length_bins(pooled, bins)
    out: dict = {"edges": edges, "arms": {}}
    if len(edges) < 2:
        return out
    for arm in arms:
        rows = [r for r in arm.predictions if "think_tokens" in r]
        if not rows:
            continue
        lengths = np.asarray([float(r["think_tokens"]) for r in rows])
        correct = np.asarray([bool(r["correct"]) for r in rows])
        group = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
        points = []
        for g in range(len(edges) - 1):
            mask = group == g
            if mask.any():
                points.append((float(np.median(lengths[mask])), float(correct[mask].mean()), int(mask.sum())))
        out["arms"][arm.name] = points
    return out


def accuracy_vs_length(arms, path: Path) -> dict | None:
    """Accuracy (percent) against reasoning length, a line per arm; returns the numbers drawn, or None."""
    data = accuracy_by_length(arms)
    if not data["arms"]:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for i, arm in enumerate(arms):
        points = data["arms"].get(arm.name)
        if points:
            x, y = [p[0] for p in points], [100 * p[1] for p in points]
            ax.plot(x, y, marker="o", label=arm.label, linewidth=1.5, color=f"C{i % 10}")
    ax.set(xlabel="thinking tokens (median of group)", ylabel="accuracy (%)", title="Accuracy against reasoning length")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return data
