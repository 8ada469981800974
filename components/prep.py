"""Prepare the run's dataset: load, check, quarantine, subset."""

from medrl.components import component


@component
def prep(run_uri: str) -> str:
    """Returns the URI of the committed dataset directory."""
    from medrl.study import prep as run

    return run(run_uri)
