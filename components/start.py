"""Start a run (freeze its config in the store) and list the arms of each training level."""

from medrl.components import component


@component
def init_run(
    preset: str,
    config: str,
    overrides: list,
    store: str,
    run_id: str,
    arms: str,
    base_model: str,
    dataset_source: str,
    dataset_uri: str,
    steps: int,
    seeds: str,
    judge_url: str,
    judge_model: str,
    mlflow_uri: str,
) -> str:
    """Returns the run's URI: <store>/<experiment>/<run_id>. The inputs are the pipeline's STUDY_PARAMETERS."""
    params = dict(locals())  # first, while the locals are exactly the inputs
    from medrl.study import init_from_parameters

    return init_from_parameters(**params)


@component
def arms_at_level(run_uri: str, level: int) -> list:
    """Arms whose starting model is ready once the previous level has trained, as {run_uri, arm} items
    (the loop reads both from its item: kfp.local 2.17 replaces other task outputs inside a loop)."""
    from medrl.study import arms_at_level as arms

    return [{"run_uri": run_uri, "arm": arm} for arm in arms(run_uri, level)]
