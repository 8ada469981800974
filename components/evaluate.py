"""Evaluate one arm on the test split."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(run_uri: str, arm: str) -> str:
    """Returns the URI of the arm's metrics.json."""
    from medrl.study import evaluate as run

    return run(run_uri, arm)
