"""Outside a study run: train one arm or evaluate one model on a prepared dataset (`medrl train`, `medrl evaluate`)."""

from __future__ import annotations

from pathlib import Path

from medrl import store
from medrl.config import ConfigError, StudyConfig
from medrl.data.records import write_json, write_jsonl
from medrl.evaluate import evaluate_model
from medrl.study import init_of
from medrl.train.run import train_to_store


def pick_arm(cfg: StudyConfig, arm: str | None) -> str:
    """The arm `medrl train` trains: the one named, else the config's only trained arm."""
    if arm:
        if arm not in cfg.arms:
            raise ConfigError(f"--arm {arm}: not in the config; it has {', '.join(cfg.arms)}")
        return arm
    trained = [n for n, a in cfg.arms.items() if a.method != "none"]
    if len(trained) != 1:
        raise ConfigError(f"the config has arms {', '.join(cfg.arms)}: choose one with --arm NAME")
    return trained[0]


def standalone_init(cfg: StudyConfig, arm: str) -> str:
    """The model an arm starts from when it is trained on its own, outside a study run: `init_of` without a run,
    so neither another arm's model nor a tiny model built at init exists."""
    init = cfg.arms[arm].init
    if init.startswith("arm:"):
        raise ConfigError(f"arms.{arm}.init={init}: outside a study run, give the model with --init DIR")
    # init_of reads the run only for `arm:` inits, refused above, so there is none to give
    start = init_of(None, cfg, arm)  # type: ignore[arg-type]
    if start.startswith("tiny:"):
        raise ConfigError(f"model.base={start}: build it first (medrl tiny-model --out DIR) and pass --init DIR")
    return start


def model_folder(ref: str, what: str) -> str:
    """`ref` itself, checked when it names a local folder: one that holds a model (config.json), so a wrong path is
    named before any loading. Hub ids and store URIs pass; the hub and the store name their own failures."""
    path = Path(ref).expanduser()
    if (path.exists() or ref.startswith(("/", ".", "~"))) and not (path / "config.json").is_file():
        problem = "is not a model folder (no config.json)" if path.exists() else "does not exist"
        raise ConfigError(f"{what} {ref}: {problem}; give a model's folder, a hub id (org/name) or a store URI")
    return ref


def train_standalone(
    cfg: StudyConfig,
    arm: str | None,
    data: str,
    out: str,
    init: str | None = None,
    work: Path | None = None,
    resume: bool = False,
    replace: bool = False,
) -> tuple[str, dict]:
    """Train one arm of `cfg` on a prepared dataset into `out`, outside a study run; returns the arm's name and
    the training summary. `init` replaces the arm's own starting model; a model at `out` is replaced only with
    `replace`. (A study run never replaces: its steps return a committed output as it is, see `train`.)"""
    name = pick_arm(cfg, arm)
    start = model_folder(init, "--init") if init else standalone_init(cfg, name)
    return name, train_to_store(cfg, name, data, out, start, work=work, resume=resume, replace=replace)


def evaluate_standalone(cfg: StudyConfig, model: str, data: str, out: Path, replace: bool = False) -> dict:
    """Evaluate `model` on a prepared dataset's test split, outside a study run: predictions.jsonl and
    metrics.json go into the folder `out`; returns the metrics. Results already there (an evaluation can take GPU
    hours) are replaced only with `replace`, checked before the model loads."""
    present = [name for name in ("predictions.jsonl", "metrics.json") if (out / name).exists()]
    if present and not replace:
        raise store.OutputError(
            f"--out {out}: {' and '.join(present)} of an earlier evaluation are there; medrl replaces them only when "
            "asked: pass --replace, or give another --out"
        )
    rows, metrics = evaluate_model(cfg, model_folder(model, "--model"), store.open_dir(store.normalize(data)))
    write_jsonl(out / "predictions.jsonl", rows)
    write_json(out / "metrics.json", {"n": len(rows), "metrics": metrics})
    return metrics
