"""Prepare the run's dataset: load, check, quarantine, subset."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prep(run_uri: str) -> str:
    """Returns the URI of the committed dataset directory."""
    from medrl.study import prep as run

    return run(run_uri)
