"""The pipeline's exit handler: delete the training jobs a failed or stopped run left holding GPUs."""

from medrl.components import component


@component
def cleanup(pipeline_run: str, namespace: str, launcher: str) -> list:
    """Returns the names of the jobs it deleted."""
    from medrl.cluster.launch import cleanup as run

    return run(pipeline_run, namespace, launcher)
