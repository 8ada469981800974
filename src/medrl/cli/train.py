"""`medrl train`, `medrl evaluate` and `medrl train-arm`: one arm on its own, or one arm of a study run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medrl.cli.common import ConfigFile, MetricsPort, Overrides, Preset, app, metrics_env
from medrl.config import ConfigError, load_config


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Prepared dataset (directory or store URI).")],
    out: Annotated[str, typer.Option(help="Where the trained model goes (directory or store URI).")],
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
    arm: Annotated[str | None, typer.Option(help="Arm of the config to train (default: the only trained one).")] = None,
    init: Annotated[str | None, typer.Option(help="Start from this model instead of the arm's `init`.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in the work folder.")
    ] = False,
    work: Annotated[
        Path | None, typer.Option(help="Folder for checkpoints and the log (default: <out>.work beside a local --out).")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a model already committed at --out.")] = False,
    metrics_port: MetricsPort = None,
) -> None:
    """Train one arm of a study config on a prepared dataset; checkpoints every `save_steps`.

    Several processes: torchrun --nproc_per_node 4 -m medrl train ... (rank 0 writes the model).

    Example: medrl train --preset demo --arm sft --data ./data --out ./sft-model
    Example: medrl train --config study.yaml --arm grpo --data ./data --out ./grpo-model --resume
    """
    from medrl.study.standalone import train_standalone  # lazy, for medrl --help: transformers
    from medrl.train.run import rank  # lazy, for medrl --help: transformers

    metrics_env(metrics_port, None)
    cfg = load_config(preset=preset, file=config, overrides=overrides or [])
    name, summary = train_standalone(cfg, arm, data, out, init, work=work, resume=resume, replace=replace)
    if rank() == 0:
        typer.echo(f"arm {name} trained for {summary['global_step']} steps; model in {out}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Model to evaluate: hub id, directory or store URI.")],
    data: Annotated[str, typer.Option(help="Prepared dataset (directory or store URI).")],
    out: Annotated[Path, typer.Option(help="Directory for predictions.jsonl and metrics.json.")],
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the predictions and metrics already at --out.")
    ] = False,
) -> None:
    """Generate answers on the test split and score them.

    Example: medrl evaluate --model ./sft-model --data ./data --out ./eval --preset demo
    """
    from medrl.study.standalone import evaluate_standalone  # lazy, for medrl --help: transformers

    cfg = load_config(preset=preset, file=config, overrides=overrides or [])
    typer.echo(json.dumps(evaluate_standalone(cfg, model, data, out, replace=replace), indent=2))


@app.command("train-arm")
def node_command(
    run: Annotated[str, typer.Option("--run", "--run-uri", help="The run's URI: <store>/<experiment>/<run_id>.")],
    arm: Annotated[str, typer.Option("--arm", help="The arm to train.")],
) -> None:
    """Train one arm of a study run on this node: the PyTorchJob container's entrypoint.

    Reads the training operator's environment (PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, MASTER_ADDR/PORT),
    starts one process per GPU with DeepSpeed ZeRO-2, and resumes from the newest committed checkpoint.

    Example: medrl train-arm --run s3://medrl/runs/paper/20261121-120000-ab12 --arm grpo
    """
    from medrl.cluster.entrypoint import run_node  # lazy, for medrl --help: transformers

    raise typer.Exit(run_node(run, arm))


@app.command()
def plan(
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
    gpus: Annotated[int, typer.Option(help="GPUs per arm (nodes x gpus_per_node): ZeRO-2 splits over them.")] = 4,
    gpu_memory: Annotated[float, typer.Option(help="Memory of one GPU in GiB (A100 80GB: 80).")] = 80.0,
) -> None:
    """Estimate each trained arm's memory per GPU from its settings and the model's geometry, before booking GPUs;
    exit 1 when an arm does not fit.

    Example: medrl plan --preset paper-table1 --gpus 4 --gpu-memory 80
    """
    from medrl.train.memory import plan_study  # lazy, for medrl --help: transformers

    if gpus < 1 or gpu_memory <= 0:
        raise ConfigError(f"--gpus {gpus} --gpu-memory {gpu_memory}: give at least one GPU and its memory in GiB")
    plans = plan_study(load_config(preset=preset, file=config, overrides=overrides or []), gpus, gpu_memory)
    for plan in plans:
        typer.echo(plan if isinstance(plan, str) else plan.line())
    raise typer.Exit(0 if all(isinstance(p, str) or p.fits for p in plans) else 1)
