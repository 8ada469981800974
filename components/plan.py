"""Start a run (freeze its config in the store) and list the arms of each training level."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
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
    judge_url: str,
    judge_model: str,
) -> str:
    """Returns the run's URI: <store>/<experiment>/<run_id>."""
    from medrl.pipeline import init_from_parameters

    return init_from_parameters(
        preset=preset,
        config=config,
        overrides=[str(o) for o in overrides],
        store=store,
        run_id=run_id,
        arms=arms,
        base_model=base_model,
        dataset_source=dataset_source,
        dataset_uri=dataset_uri,
        steps=steps,
        judge_url=judge_url,
        judge_model=judge_model,
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def arms_at_level(run_uri: str, level: int) -> list:
    """Arms whose starting model is ready once the previous level has trained, as {run_uri, arm} items
    (the loop reads both from its item: kfp.local 2.17 replaces other task outputs inside a loop)."""
    from medrl.study import arms_at_level as arms

    return [{"run_uri": run_uri, "arm": arm} for arm in arms(run_uri, level)]
