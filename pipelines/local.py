"""A whole study on this machine (`medrl run`, `medrl demo`): the study pipeline run through kfp.local, one task
at a time, every task's log kept in the run's folder."""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from pathlib import Path

from kfp import local

from medrl import store, study, tracking
from medrl.config import MAX_LEVELS, ConfigError, load_config
from medrl.console import TaskConsole
from medrl.errors import MedrlError
from medrl.pipelines.study import build
from medrl.store.layout import RunLayout, new_run_id

log = logging.getLogger("medrl")


class StudyFailed(MedrlError):
    """A task of a local study run failed; the message names it and where its log is."""


def local_tasks(arms: int) -> int:
    """Tasks of a local run: init, prep, one arm listing per level, train and evaluate per arm, report, cleanup."""
    return 4 + MAX_LEVELS + 2 * arms


def run_local(params: dict, pipeline_root: Path, logs: Path | None = None, tasks: int = 0, verbose: bool = False):
    """Run the study pipeline on this machine (kfp.local, subprocesses in this Python environment).

    Arms run one at a time: on a laptop, parallel training only competes for the same cores. No task retries: a
    step that fails here fails again the same way (retries are for lost pods in the cluster). With `logs`, what
    the tasks print goes to one file per task there and the console shows one line per task (`verbose`: both)."""
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    pipeline = build(parallelism=1, retries=False)
    if logs is None:
        pipeline(**params)
        return
    console = TaskConsole(logs, sys.stdout, tasks, verbose)
    try:
        with contextlib.redirect_stdout(console):
            pipeline(**params)
    except RuntimeError:
        if not console.failed:
            raise
        raise StudyFailed(
            f"task {', '.join(console.failed)} failed after {console.elapsed():.0f} s; its log: "
            f"{logs / console.failed[0]}.log (medrl run --verbose shows every task's output)"
        ) from None
    finally:
        console.close()


def run_study(
    preset: str | None = None,
    config: Path | None = None,
    overrides: list[str] | None = None,
    arms: list[str] | None = None,
    store_uri: str | None = None,
    run_id: str | None = None,
    pipeline_root: Path | None = None,
    verbose: bool = False,
) -> tuple[RunLayout, list]:
    """Run a whole study on this machine through the Kubeflow pipeline (kfp.local): every arm, then the report.
    `config` is a study YAML file; returns the run's layout and every evaluated arm's results."""
    if not preset and not config:
        raise ConfigError("give --preset NAME or --config FILE")
    extra = [f"store={store_uri}"] if store_uri else []
    cfg = load_config(preset=preset, file=config, overrides=[*(overrides or []), *extra], arms=arms or None)
    tracking.check_at_start(cfg)  # here, not in the init task's log
    if run_id is None:  # an empty --run-id is refused by the layout's rule, not quietly replaced by a new id
        run_id = new_run_id()
    run = RunLayout.create(store.normalize(cfg.store), cfg.experiment, run_id)
    study.check_same_config(run, cfg)  # a resume: before anything runs, and before the arms are announced
    params = {
        "preset": preset or "",
        "config": config.read_text(encoding="utf-8") if config else "",
        "overrides": [*(overrides or []), f"store={store.normalize(cfg.store)}"],
        "store": "",
        "run_id": run_id,
        "arms": ",".join(arms or []),
    }
    root = pipeline_root or Path(tempfile.mkdtemp(prefix="medrl-kfp-"))
    log.info("running study %s (arms: %s) as run %s; task logs in %s", cfg.name, ", ".join(cfg.arms), run_id,
             store.join(run.uri, "logs"))  # fmt: skip
    logs = root / "logs"
    try:
        with run.lease():  # a second `medrl run` with the same run id stops instead of writing into this one
            run_local(params, root, logs, local_tasks(len(cfg.arms)), verbose)
    finally:
        for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            store.put_file(store.join(run.uri, "logs", path.name), path)
    return run, study.collect(run.uri)
