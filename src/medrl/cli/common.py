"""The command groups and the options several commands share."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from medrl.config import preset_names

app = typer.Typer(
    name="medrl",
    help="Reinforcement-learning fine-tuning of medical vision-language models, on a laptop or under Kubeflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
pipeline_app = typer.Typer(
    help="Compile the study pipeline, start and schedule runs on Kubeflow Pipelines, list runs.", no_args_is_help=True
)
app.add_typer(pipeline_app, name="pipeline")
store_app = typer.Typer(help="Look into the artifact store (a directory, file:// or s3:// URI).", no_args_is_help=True)
app.add_typer(store_app, name="store")

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Settings as key.sub=value, e.g. train.learning_rate=1e-5", show_default=False),
]
Preset = Annotated[str | None, typer.Option("--preset", "-p", help=f"A shipped study: {', '.join(preset_names())}")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="A study YAML file instead of a preset.")]
MetricsPort = Annotated[
    int | None, typer.Option(help="Serve training's Prometheus /metrics on this port (rank 0); env MEDRL_METRICS_PORT.")
]
Pushgateway = Annotated[
    str | None,
    typer.Option(help="Push batch stages' metrics to this Pushgateway URL; env MEDRL_PUSHGATEWAY_URL."),
]


def metrics_env(port: int | None, pushgateway: str | None) -> None:
    """Options become environment variables, so kfp.local's subprocesses and torchrun's ranks see them too."""
    if port is not None:
        os.environ["MEDRL_METRICS_PORT"] = str(port)
    if pushgateway:
        os.environ["MEDRL_PUSHGATEWAY_URL"] = pushgateway


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="medrl: %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
