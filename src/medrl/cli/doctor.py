"""`medrl doctor`: check what a run needs, on this machine or on a cluster, each failure with its fix."""

from __future__ import annotations

from typing import Annotated

import typer

from medrl import image_check
from medrl.cli.common import app
from medrl.doctor import cluster_checks, kubeconfig_available, local_checks


@app.command()
def doctor(
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="Check this cluster (default: KUBECONFIG).")
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Check only this machine, even with a kubeconfig.")] = False,
    namespace: Annotated[str, typer.Option("--namespace", help="medrl's namespace (PyTorchJobs, judge).")] = "medrl",
    kfp_namespace: Annotated[str, typer.Option("--kfp-namespace", help="Where pipeline pods run.")] = "kubeflow",
    service_account: Annotated[
        str, typer.Option("--service-account", help="Service account of pipeline runs.")
    ] = "pipeline-runner",
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs a training node needs (gpus_per_node).")] = 0,
    store: Annotated[str | None, typer.Option("--store-endpoint", help="S3 endpoint (default: ConfigMap).")] = None,
    prometheus: Annotated[str | None, typer.Option("--prometheus", help="Prometheus address.")] = None,
    pushgateway: Annotated[str | None, typer.Option("--pushgateway", help="Pushgateway address.")] = None,
    judge: Annotated[str | None, typer.Option("--judge", help="Judge server address.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="This image's self-check: slim, train, ...")] = None,
) -> None:
    """Check what a run needs, each failure with its fix: with a kubeconfig the cluster (PyTorchJob CRD, RBAC,
    store, Prometheus, Pushgateway, judge, GPUs), else this machine (packages, accelerator, pipeline files).

    Example: medrl doctor --gpus 4 --judge http://medrl-judge.medrl.svc:8000

    Inside one of medrl's images, `medrl doctor --image slim|train|train-cpu` checks that image instead: what its
    steps import (at its lock's versions), UID 1000, nothing writable outside /tmp.
    """
    if image is not None:
        raise typer.Exit(_check_image(image))

    # A named kubeconfig that does not exist is refused before the package checks import torch and the rest.
    cluster = not local and kubeconfig_available(kubeconfig)
    checks = local_checks()
    if cluster:
        given = {"store": store, "prometheus": prometheus, "pushgateway": pushgateway, "judge": judge}
        where = (kubeconfig, context, namespace, kfp_namespace, service_account, gpus)
        checks += cluster_checks(*where, {k: v for k, v in given.items() if v})
    elif not local:
        typer.echo("no kubeconfig: checking this machine only (give --kubeconfig to check a cluster)")
    raise typer.Exit(_print_checks(checks))


def _check_image(image: str) -> int:
    """The self-check of the image this runs in; 2 for an image name medrl does not build."""
    if image not in image_check.IMAGES:
        typer.echo(f"error: --image {image!r}: one of {', '.join(image_check.IMAGES)}", err=True)
        return 2
    return image_check.report(image_check.image_checks(image), typer.echo)


def _print_checks(checks: list) -> int:
    """Print each check, a failure with its fix; the exit status: 1 when any failed."""
    failed = 0
    for check in checks:
        typer.echo(f"[{'ok ' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        if not check.ok:
            failed += 1
            typer.echo(f"       fix: {check.fix}")
    return 1 if failed else 0
