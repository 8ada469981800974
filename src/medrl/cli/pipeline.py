"""`medrl pipeline ...`: compile the study pipeline; submit, schedule and list runs on Kubeflow Pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medrl.cli.common import Overrides, Preset, pipeline_app
from medrl.kfp import client
from medrl.kfp.parameters import packaged_pipeline


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[
        Path | None,
        typer.Option(help="Output .yaml file, or a folder to write study.yaml into (default: study.yaml here)."),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Image of the steps that only orchestrate (Dockerfile target slim); alone: of every step. "
            "Default: ghcr.io/medrl/medrl-slim:0.1.0."
        ),
    ] = None,
    train_image: Annotated[
        str | None,
        typer.Option(
            help="Image of the training pods and the evaluate step (target train). Default: --image if given, "
            "else ghcr.io/medrl/medrl:0.1.0."
        ),
    ] = None,
) -> None:
    """Compile the study pipeline to a YAML package for the Kubeflow UI or API.

    Example: medrl pipeline compile --image registry.local/medrl-slim:0.1.0 --train-image registry.local/medrl:0.1.0
    """
    from medrl.pipelines.compile import compile_pipeline  # lazy, for medrl --help: the kfp SDK

    typer.echo(f"compiled: {compile_pipeline(out, image, train_image)}")


# ------------------------------------------------------------------ pipeline submit | schedule | runs (Kubeflow)
KfpHost = Annotated[
    str,
    typer.Option(
        "--host", envvar="KF_PIPELINES_ENDPOINT", help="Kubeflow Pipelines address, e.g. http://localhost:8080."
    ),
]
KfpPackage = Annotated[Path | None, typer.Option("--package", help="Compiled pipeline (default: the one medrl ships).")]
KfpParams = Annotated[
    list[str] | None, typer.Option("--param", help="Pipeline parameter name=value (repeat), e.g. gpus_per_node=4.")
]
KfpExperiment = Annotated[str, typer.Option("--experiment", help="Kubeflow experiment the run goes into.")]
KfpNamespace = Annotated[str | None, typer.Option("--namespace", help="Profile namespace (multi-user Kubeflow).")]
KfpServiceAccount = Annotated[str | None, typer.Option("--service-account", help="Service account of the run.")]
KfpToken = Annotated[str | None, typer.Option("--token", envvar="MEDRL_KFP_TOKEN", help="Bearer token for the API.")]


def _package(package: Path | None) -> Path:
    return package or packaged_pipeline()


@pipeline_app.command("submit")
def pipeline_submit(
    host: KfpHost,
    overrides: Overrides = None,
    preset: Preset = None,
    param: KfpParams = None,
    experiment: KfpExperiment = "medrl",
    run_name: Annotated[str | None, typer.Option("--run-name", help="Name shown in the UI.")] = None,
    package: KfpPackage = None,
    namespace: KfpNamespace = None,
    service_account: KfpServiceAccount = None,
    token: KfpToken = None,
) -> None:
    """Start one run of the study pipeline on Kubeflow Pipelines.

    Example: medrl pipeline submit --host http://kfp --preset paper-table1 --param gpus_per_node=4 --param eval_gpus=1
    """

    pkg = _package(package)
    args = client.arguments(pkg, param, preset, overrides)
    run = client.submit(host, pkg, args, experiment, run_name, namespace, service_account, token)
    typer.echo(f"run {run['run_id']} started in experiment {experiment}: {run['url']}")


@pipeline_app.command("schedule")
def pipeline_schedule(
    host: KfpHost,
    cron: Annotated[str, typer.Option("--cron", help="Six fields, seconds first: '0 0 2 * * 0' = Sundays 02:00.")],
    overrides: Overrides = None,
    preset: Preset = None,
    param: KfpParams = None,
    experiment: KfpExperiment = "medrl",
    name: Annotated[str | None, typer.Option("--name", help="Name of the recurring run.")] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", help="Runs at once (1-10).")] = 1,
    catchup: Annotated[
        bool, typer.Option("--catchup/--no-catchup", help="Start the runs missed while paused (Kubeflow's default).")
    ] = True,
    package: KfpPackage = None,
    namespace: KfpNamespace = None,
    service_account: KfpServiceAccount = None,
    token: KfpToken = None,
) -> None:
    """Schedule the study pipeline as a recurring run (e.g. weekly re-runs on fresh data).

    Example: medrl pipeline schedule --host http://localhost:8080 --cron "0 0 2 * * 0" --no-catchup
    """

    pkg = _package(package)
    args = client.arguments(pkg, param, preset, overrides)
    job = client.schedule(
        host, pkg, args, cron, experiment, name, max_concurrency, catchup, namespace, service_account, token
    )
    typer.echo(f"recurring run {job['recurring_run_id']} ({job['name']}) scheduled: {job['cron']}")


@pipeline_app.command("runs")
def pipeline_runs(
    host: KfpHost,
    experiment: Annotated[str | None, typer.Option("--experiment", help="Only runs of this experiment.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many runs, newest first.")] = 20,
    namespace: KfpNamespace = None,
    token: KfpToken = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the newest runs on Kubeflow Pipelines with their state.

    Example: medrl pipeline runs --host http://localhost:8080 --experiment medrl
    """

    rows = client.runs(host, experiment, limit, namespace, token)
    if as_json:
        typer.echo(client.to_json(rows))
        return
    typer.echo(f"{'RUN ID':<38} {'STATE':<11} {'CREATED':<20} NAME")
    for r in rows:
        typer.echo(f"{r['run_id']:<38} {r['state']:<11} {r['created']:<20} {r['name']}")
