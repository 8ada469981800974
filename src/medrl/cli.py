"""`medrl`: the command line. Each command parses its options and calls one function of the core."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from medrl.config import ConfigError, dump_config, load_config, preset_names

app = typer.Typer(
    name="medrl",
    help="Reinforcement-learning fine-tuning of medical vision-language models, on a laptop or under Kubeflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
pipeline_app = typer.Typer(help="Compile the study pipeline for Kubeflow.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")

log = logging.getLogger("medrl")

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Settings as key.sub=value, e.g. train.learning_rate=1e-5", show_default=False),
]
Preset = Annotated[str | None, typer.Option("--preset", "-p", help=f"A shipped study: {', '.join(preset_names())}")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="A study YAML file instead of a preset.")]


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="medrl: %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option(help="Directory to write the checkpoint to.")],
    arch: Annotated[str, typer.Option(help="Architecture: qwen2-vl, qwen2.5-vl or qwen3-vl.")] = "qwen2-vl",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build a tiny model of a real architecture, with a tokenizer trained here (tests, the demo).

    Example: medrl tiny-model --arch qwen2-vl --out ./tiny-qwen2-vl
    """
    from medrl.infra import store
    from medrl.models.tiny import build_tiny

    with store.commit_dir(store.normalize(str(out))) as staging:
        build_tiny(arch, staging, seed=seed)
    typer.echo(f"tiny {arch} model written to {out}")


@app.command()
def prep(
    out: Annotated[str, typer.Option(help="Where the prepared dataset goes: a directory or store URI.")],
    source: Annotated[str, typer.Option(help="synthetic | ... (see README).")] = "synthetic",
    input: Annotated[str | None, typer.Option("--input", help="The source on disk (not for synthetic).")] = None,
    train_size: Annotated[int | None, typer.Option(help="Training rows kept.")] = 256,
    test_size: Annotated[int | None, typer.Option(help="Test rows kept.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the subset draw.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of synthetic images.")] = 56,
    max_bad_fraction: Annotated[float, typer.Option(help="Fail above this share of bad rows.")] = 0.01,
    images: Annotated[str | None, typer.Option(help="ms-cxr: the MIMIC-CXR-JPG folder of its images.")] = None,
    cxr_tasks: Annotated[
        str, typer.Option(help="Chest X-ray sources: report,grounding (or one).")
    ] = "report,grounding",
) -> None:
    """Turn a source into a prepared dataset (train.jsonl, test.jsonl, images/, quarantine.jsonl, summary.json).

    Example: medrl prep --source synthetic --out ./data --train-size 256 --test-size 64 --seed 0

    Example: medrl prep --source vindr-cxr --input /data/vindr-cxr --out ./vindr --train-size 5000
    """
    from medrl.config import DataConfig
    from medrl.data.prep import prepare
    from medrl.infra import store

    cfg = DataConfig(
        source=source,
        input=input,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
        image_size=image_size,
        max_bad_fraction=max_bad_fraction,
        images=images,
        cxr_tasks=[t.strip() for t in cxr_tasks.split(",") if t.strip()],
    )
    with store.commit_dir(store.normalize(out)) as staging:
        summary = prepare(cfg, staging)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Prepared dataset (directory or store URI).")],
    out: Annotated[str, typer.Option(help="Where the trained model goes (directory or store URI).")],
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
    arm: Annotated[str | None, typer.Option(help="Arm of the config to train (default: the only trained one).")] = None,
    init: Annotated[str | None, typer.Option(help="Start from this model instead of the arm's `init`.")] = None,
) -> None:
    """Train one arm of a study config on a prepared dataset.

    Example: medrl train --preset demo --arm sft --data ./data --out ./sft-model
    """
    from medrl.infra import store
    from medrl.train import train_arm

    cfg = load_config(preset=preset, file=config, overrides=overrides or [])
    name = _pick_arm(cfg, arm)
    start = init or _standalone_init(cfg, name)
    data_dir = store.open_dir(store.normalize(data))
    with tempfile.TemporaryDirectory(prefix="medrl-train-") as work, store.commit_dir(store.normalize(out)) as staging:
        summary = train_arm(cfg, name, data_dir, start, staging, Path(work))
        log_file = Path(work) / "train_log.jsonl"
        if log_file.exists():
            (staging / "train_log.jsonl").write_bytes(log_file.read_bytes())
    typer.echo(f"arm {name} trained for {summary['global_step']} steps; model in {out}")


def _standalone_init(cfg, name: str) -> str:
    """The model an arm starts from when it is trained on its own, outside a study run."""
    spec = cfg.arms[name]
    if spec.init.startswith("arm:"):
        raise ConfigError(f"arms.{name}.init={spec.init}: outside a study run, give the model with --init DIR")
    start = spec.model or cfg.model.base if spec.init == "base" else spec.init
    if start.startswith("tiny:"):
        raise ConfigError(f"model.base={start}: build it first (medrl tiny-model --out DIR) and pass --init DIR")
    return start


def _pick_arm(cfg, arm: str | None) -> str:
    if arm:
        if arm not in cfg.arms:
            raise ConfigError(f"--arm {arm}: not in the config; it has {', '.join(cfg.arms)}")
        return arm
    trained = [n for n, a in cfg.arms.items() if a.method != "none"]
    if len(trained) != 1:
        raise ConfigError(f"the config has arms {', '.join(cfg.arms)}: choose one with --arm NAME")
    return trained[0]


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Model to evaluate: hub id, directory or store URI.")],
    data: Annotated[str, typer.Option(help="Prepared dataset (directory or store URI).")],
    out: Annotated[Path, typer.Option(help="Directory for predictions.jsonl and metrics.json.")],
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
) -> None:
    """Generate answers on the test split and score them.

    Example: medrl evaluate --model ./sft-model --data ./data --out ./eval --preset demo
    """
    from medrl.data.records import write_json, write_jsonl
    from medrl.evaluate import evaluate_model
    from medrl.infra import store

    cfg = load_config(preset=preset, file=config, overrides=overrides or [])
    rows, metrics = evaluate_model(cfg, model, store.open_dir(store.normalize(data)))
    write_jsonl(out / "predictions.jsonl", rows)
    write_json(out / "metrics.json", {"n": len(rows), "metrics": metrics})
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
def report(run: Annotated[str, typer.Option(help="The run folder: <store>/<experiment>/<run_id>.")]) -> None:
    """(Re)build the report of a study run from its arms' metrics and training logs.

    Example: medrl report --run ./medrl-runs/demo/20261121-120000-ab12
    """
    from medrl import study
    from medrl.infra import store

    uri = study.report(store.normalize(run))
    typer.echo(f"report: {uri}/report.md")


def _run_study(preset, config, overrides, arms, store_uri, run_id, pipeline_root) -> str:
    from medrl import study
    from medrl.infra import store
    from medrl.infra.layout import RunLayout, new_run_id
    from medrl.pipeline import run_local

    arm_list = [a.strip() for a in (arms or "").split(",") if a.strip()]
    extra = [f"store={store_uri}"] if store_uri else []
    cfg = load_config(preset=preset, file=config, overrides=(overrides or []) + extra, arms=arm_list or None)
    run_id = run_id or new_run_id()
    run = RunLayout.create(store.normalize(cfg.store), cfg.experiment, run_id)
    params = {
        "preset": preset or "",
        "config": Path(config).read_text(encoding="utf-8") if config else "",
        "overrides": (overrides or []) + [f"store={store.normalize(cfg.store)}"],
        "store": "",
        "run_id": run_id,
        "arms": ",".join(arm_list),
    }
    root = Path(pipeline_root) if pipeline_root else Path(tempfile.mkdtemp(prefix="medrl-kfp-"))
    log.info("running study %s (arms: %s) as run %s", cfg.name, ", ".join(cfg.arms), run_id)
    run_local(params, root)
    results = study.collect(run.uri)
    from medrl.report import table1

    typer.echo("\n" + table1(results) + "\n")
    typer.echo(f"report: {run.report}/report.md")
    return run.uri


@app.command()
def run(
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
    arms: Annotated[
        str | None, typer.Option(help="Comma-separated arms to run (and the arms they start from).")
    ] = None,
    store: Annotated[str | None, typer.Option("--store", help="Store URI: file:///path or s3://bucket/prefix.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: time-based).")] = None,
    pipeline_root: Annotated[Path | None, typer.Option(help="kfp.local working folder.")] = None,
) -> None:
    """Run a whole study (every arm, then the report) through the Kubeflow pipeline, locally.

    Example: medrl run --preset demo --arms sft,sft-grpo train.seed=1
    """
    if not preset and not config:
        raise ConfigError("give --preset NAME or --config FILE")
    _run_study(preset, config, overrides, arms, store, run_id, pipeline_root)


@app.command()
def demo(
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option(help="Local store for the run.")] = Path("medrl-runs"),
    arms: Annotated[str | None, typer.Option(help="Comma-separated arms (default: all four).")] = None,
) -> None:
    """The laptop demo: a tiny Qwen2-VL model, synthetic scans, arms zero-shot / SFT / SFT->GRPO / SFT->Dr.GRPO.

    Example: medrl demo --out ./medrl-runs
    """
    _run_study("demo", None, overrides, arms, str(out.resolve()), None, None)


@app.command("config")
def show_config(overrides: Overrides = None, preset: Preset = None, config: ConfigFile = None) -> None:
    """Print the resolved configuration (defaults <- preset or file <- overrides) as YAML.

    Example: medrl config --preset demo arms.sft.epochs=5
    """
    typer.echo(dump_config(load_config(preset=preset, file=config, overrides=overrides or [])), nl=False)


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Path | None, typer.Option(help="Output YAML (default: pipelines/compiled/study.yaml).")] = None,
    image: Annotated[str | None, typer.Option(help="Container image of every component.")] = None,
) -> None:
    """Compile the study pipeline to a YAML package for the Kubeflow UI or API.

    Example: medrl pipeline compile --image registry.local/medrl:0.1.0
    """
    from medrl.pipeline import compile_pipeline

    typer.echo(f"compiled: {compile_pipeline(out, image)}")


@app.command()
def doctor() -> None:
    """Check this environment: Python packages, accelerator, offline model loading, the pipeline files.

    Example: medrl doctor
    """
    from medrl.doctor import local_checks

    failed = 0
    for check in local_checks():
        mark = "ok " if check.ok else "FAIL"
        typer.echo(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok:
            failed += 1
            typer.echo(f"       fix: {check.fix}")
    raise typer.Exit(1 if failed else 0)


def main() -> None:
    from medrl.data.prep import PrepError
    from medrl.infra.store import StoreError

    _setup_logging()
    try:
        app()
    except (ConfigError, PrepError, StoreError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
