"""Train one arm of the study."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(run_uri: str, arm: str) -> str:
    """Returns the URI of the model the arm evaluates."""
    from medrl.study import train as run

    return run(run_uri, arm)
