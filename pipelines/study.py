"""The study pipeline: init -> prep -> (train -> evaluate) per arm, level by level -> report.

Arms that start from another arm's model (`init: arm:<name>`) sit one level later, so SFT -> GRPO chains
train in order while independent arms fan out in parallel. The same definition runs on Kubeflow Pipelines
and locally through kfp.local (`medrl run`, `medrl demo`).
"""

from kfp import dsl

from components.evaluate import evaluate
from components.plan import arms_at_level, init_run
from components.prep import prep
from components.report import report
from components.train import train
from medrl.config import MAX_LEVELS


def build(parallelism: int = 0):
    """The pipeline function; `parallelism` caps concurrent arms per level (0: no cap)."""

    @dsl.pipeline(name="medrl-study", description="Fine-tune and evaluate every arm of a medrl study.")
    def study(
        preset: str = "demo",
        config: str = "",
        overrides: list = [],  # noqa: B006  (kfp takes pipeline defaults from the signature)
        store: str = "",
        run_id: str = "",
        arms: str = "",
    ):
        run = init_run(preset=preset, config=config, overrides=overrides, store=store, run_id=run_id, arms=arms)
        run.set_caching_options(False)
        data = prep(run_uri=run.output).set_caching_options(False)
        previous, evaluations = data, []
        for level in range(MAX_LEVELS):
            names = arms_at_level(run_uri=run.output, level=level).set_caching_options(False)
            with dsl.ParallelFor(names.output, parallelism=parallelism) as item:
                trained = train(run_uri=item.run_uri, arm=item.arm).after(previous).set_caching_options(False)
                scored = evaluate(run_uri=item.run_uri, arm=item.arm).after(trained).set_caching_options(False)
            previous = trained
            evaluations.append(scored)
        report(run_uri=run.output).after(*evaluations).set_caching_options(False)

    return study


study = build()
