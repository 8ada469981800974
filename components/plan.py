"""Start a run (freeze its config in the store) and list the arms of each training level."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def init_run(preset: str, config: str, overrides: list, store: str, run_id: str, arms: str) -> str:
    """Returns the run's URI: <store>/<experiment>/<run_id>."""
    from medrl.study import init_run as run

    return run(
        preset=preset or None,
        config_text=config or None,
        overrides=[str(o) for o in overrides],
        store_uri=store or None,
        run_id=run_id or None,
        arms=[a.strip() for a in arms.split(",") if a.strip()],
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def arms_at_level(run_uri: str, level: int) -> list:
    """Arms whose starting model is ready once the previous level has trained, as {run_uri, arm} items
    (the loop reads both from its item: kfp.local 2.17 replaces other task outputs inside a loop)."""
    from medrl.study import arms_at_level as arms

    return [{"run_uri": run_uri, "arm": arm} for arm in arms(run_uri, level)]
