"""`medrl run`, `medrl demo`, `medrl report` and `medrl config`: a whole study, run on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medrl.cli.common import ConfigFile, MetricsPort, Overrides, Preset, Pushgateway, app, metrics_env
from medrl.config import dump_config, load_config, seed_list
from medrl.kfp.parameters import DEFAULT_IMAGE, DEFAULT_SLIM_IMAGE

Arms = Annotated[str | None, typer.Option(help="Comma-separated arms to run (and the arms they start from).")]
Seeds = Annotated[
    str | None,
    typer.Option(help="Train every arm once per seed: a count (3: seeds 0, 1, 2) or a list (0,1,2); default one."),
]


@app.command()
def report(run: Annotated[str, typer.Option(help="The run folder: <store>/<experiment>/<run_id>.")]) -> None:
    """(Re)build the report of a study run (report.md, a self-contained report.html, figures, summary.json).

    Example: medrl report --run ./medrl-runs/demo/20261121-120000-ab12
    """
    from medrl import store, study  # lazy, for medrl --help: transformers

    uri = study.report(store.normalize(run))
    typer.echo(f"report: {uri}/report.md and {uri}/report.html")


Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also print every task's output (kfp, warnings, training steps).")
]
Runner = Annotated[
    str,
    typer.Option(
        help="subprocess: every step in this Python environment; container: every step in its image (Docker or "
        "Podman; UID 1000, read-only root file system, an s3:// store), as in the cluster."
    ),
]
Image = Annotated[str, typer.Option(help="--runner container: the image of the steps that only orchestrate.")]
TrainImage = Annotated[str, typer.Option(help="--runner container: the image that trains and evaluates.")]


@app.command()
def run(
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
    arms: Arms = None,
    store: Annotated[str | None, typer.Option("--store", help="Store URI: file:///path or s3://bucket/prefix.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: time-based).")] = None,
    pipeline_root: Annotated[Path | None, typer.Option(help="kfp.local working folder.")] = None,
    metrics_port: MetricsPort = None,
    pushgateway: Pushgateway = None,
    verbose: Verbose = False,
    seeds: Seeds = None,
    like: Annotated[
        str | None,
        typer.Option(
            help="Repeat a committed run: its config and seeds; warns about each version or data that differs."
        ),
    ] = None,
    runner: Runner = "subprocess",
    image: Image = DEFAULT_SLIM_IMAGE,
    train_image: TrainImage = DEFAULT_IMAGE,
) -> None:
    """Run a whole study (every arm, then the report) through the Kubeflow pipeline, locally: one line per task,
    then Table 1; each task's output is in <run>/logs/.

    Example: medrl run --preset demo --arms sft,sft-grpo train.seed=1
    Example: medrl run --like ./medrl-runs/demo/20261121-120000-ab12
    Example: medrl run --config study.yaml --runner container --store s3://medrl/runs  (the images of `make images`)
    """
    from medrl.pipelines.local import run_study  # lazy, for medrl --help: the kfp SDK

    metrics_env(metrics_port, pushgateway)
    overrides = [*(overrides or []), *_seed_override(seeds)]
    results = run_study(
        preset, config, overrides, _arm_list(arms), store, run_id, pipeline_root, verbose, like, runner, image,
        train_image,
    )  # fmt: skip
    _print_results(*results)


@app.command()
def demo(
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option(help="Local store for the run.")] = Path("medrl-runs"),
    arms: Annotated[str | None, typer.Option(help="Comma-separated arms (default: all of the preset).")] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Every arm of the paper at laptop scale (preset demo-full, ~30 min).")
    ] = False,
    verbose: Verbose = False,
    seeds: Seeds = None,
) -> None:
    """The laptop demo: a tiny Qwen2-VL model, synthetic scans, arms zero-shot / SFT / SFT->GRPO / SFT->Dr.GRPO
    (with --full also LoRA, DPO, GRPO from scratch, + semantic, + ECR, + CWR).

    Example: medrl demo --out ./medrl-runs
    Example: medrl demo --full
    Example: medrl demo --seeds 3
    """
    from medrl.pipelines.local import run_study  # lazy, for medrl --help: the kfp SDK

    preset = "demo-full" if full else "demo"
    overrides = [*(overrides or []), *_seed_override(seeds)]
    _print_results(*run_study(preset, None, overrides, _arm_list(arms), str(out.resolve()), verbose=verbose))


@app.command("config")
def show_config(overrides: Overrides = None, preset: Preset = None, config: ConfigFile = None) -> None:
    """Print the resolved configuration (defaults <- preset or file <- overrides) as YAML.

    Example: medrl config --preset demo arms.sft.epochs=5
    """
    typer.echo(dump_config(load_config(preset=preset, file=config, overrides=overrides or [])), nl=False)


def _seed_override(seeds: str | None) -> list[str]:
    chosen = seed_list(seeds or "")
    return [f"seeds={chosen}"] if chosen is not None else []


def _arm_list(arms: str | None) -> list[str]:
    return [a.strip() for a in (arms or "").split(",") if a.strip()]


def _print_results(run, results: list) -> None:
    from medrl.report import table1  # lazy, for medrl --help: matplotlib
    from medrl.study import load_run

    typer.echo("\n" + table1(results, load_run(run.uri)[1].arms) + "\n")
    typer.echo(f"report: {run.report}/report.md  (task logs: {run.uri}/logs/)")
