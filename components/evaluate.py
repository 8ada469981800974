"""Evaluate one arm on the test split."""

from medrl.components import component


@component
def evaluate(run_uri: str, arm: str) -> str:
    """Returns the URI of the arm's metrics.json."""
    from medrl.study.arm import evaluate_in_run as run

    return run(run_uri, arm)
