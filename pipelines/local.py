"""A whole study on this machine (`medrl run`, `medrl demo`): the study pipeline run through kfp.local, one task
at a time, every task's log kept in the run's folder."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import kfp
from kfp import local

from medrl import store, study, tracking
from medrl.config import MAX_LEVELS, ConfigError, load_config
from medrl.console import TaskConsole, library_to_log
from medrl.errors import MedrlError
from medrl.kfp.parameters import DEFAULT_IMAGE, DEFAULT_SLIM_IMAGE
from medrl.pipelines.study import build
from medrl.provenance import differences, environment
from medrl.store.layout import RunLayout, new_run_id

log = logging.getLogger("medrl")
RUNNERS = ("subprocess", "container")
KFP_PACKAGE = Path(kfp.__file__).parent


class StudyFailed(MedrlError):
    """A task of a local study run failed; the message names it and where its log is."""


def local_tasks(arms: int) -> int:
    """Tasks of a local run: init, prep, one arm listing per level, train and evaluate per arm, report, cleanup."""
    return 4 + MAX_LEVELS + 2 * arms


def run_local(
    params: dict,
    pipeline_root: Path,
    logs: Path | None = None,
    tasks: int = 0,
    verbose: bool = False,
    runner: Callable[[Path], local.DockerRunner] | None = None,
    images: tuple[str, str] = (DEFAULT_SLIM_IMAGE, DEFAULT_IMAGE),
):
    """Run the study pipeline on this machine through kfp.local: with its SubprocessRunner (the default: each step a
    subprocess of this Python environment), or with the DockerRunner `runner` makes for the pipeline root (each step
    in its image: `images`, the slim and the training image; see `medrl.pipelines.containers`).

    Arms run one at a time: on a laptop, parallel training only competes for the same cores. No task retries: a
    step that fails here fails again the same way (retries are for lost pods in the cluster). With `logs`, what
    the tasks print, and what kfp.local logs and warns itself, goes to one file per task there and the console
    shows one line per task (`verbose`: both)."""
    pipeline_root.mkdir(parents=True, exist_ok=True)
    pipeline = build(*images, parallelism=1, retries=False, train_in_step=True)

    def start():
        kfp_root, kfp_runner = pipeline_root, local.SubprocessRunner(use_venv=False)
        if runner:
            # A folder of the run's own, opened to the steps' UID by the runner: the user's --pipeline-root keeps
            # its mode.
            kfp_root = pipeline_root / "steps"
            kfp_root.mkdir(exist_ok=True)
            kfp_runner = runner(kfp_root)
        local.init(runner=kfp_runner, pipeline_root=str(kfp_root), raise_on_error=True)
        pipeline(**params)

    if logs is None:
        start()
        return
    console = TaskConsole(logs, sys.stdout, tasks, verbose)
    try:
        with contextlib.redirect_stdout(console), library_to_log(KFP_PACKAGE, console):
            start()  # the DockerRunner, made here, logs its own settings: they go to the log too
    except RuntimeError:
        if not console.failed:
            raise
        raise StudyFailed(
            f"task {', '.join(console.failed)} failed after {console.elapsed():.0f} s; its log: "
            f"{logs / console.failed[0]}.log (medrl run --verbose shows every task's output)"
        ) from None
    finally:
        console.close()


def like_run(ref: str) -> tuple[str, dict]:
    """The frozen config and the provenance of a committed run (one whose data was prepared), for `--like`."""
    run = RunLayout(store.normalize(ref))
    if not (store.exists(run.config) and store.exists(run.provenance) and store.is_committed(run.data)):
        missing = [n for n, ok in (("config.yaml", store.exists(run.config)),
                                   ("provenance.json", store.exists(run.provenance))) if not ok]  # fmt: skip
        raise ConfigError(
            f"--like {ref}: not a committed run ({', '.join(missing) or 'no committed data/'} missing); give a run "
            "folder <store>/<experiment>/<run_id> whose data step has finished"
        )
    try:
        return store.read_text(run.config), json.loads(store.read_text(run.provenance))
    except json.JSONDecodeError:
        raise ConfigError(f"--like {ref}: its provenance.json is not valid JSON; it is not a committed run") from None


def like_warnings(origin: dict, now: dict) -> list[str]:
    """What differs between the run repeated and this one (versions, images, hardware, data), one line each."""
    return [f"--like: {line}" for line in differences(origin, now)]


def run_study(
    preset: str | None = None,
    config: Path | None = None,
    overrides: list[str] | None = None,
    arms: list[str] | None = None,
    store_uri: str | None = None,
    run_id: str | None = None,
    pipeline_root: Path | None = None,
    verbose: bool = False,
    like: str | None = None,
    runner: str = "subprocess",
    image: str = DEFAULT_SLIM_IMAGE,
    train_image: str = DEFAULT_IMAGE,
) -> tuple[RunLayout, list]:
    """Run a whole study on this machine through the Kubeflow pipeline (kfp.local): every arm, then the report.
    `config` is a study YAML file; `like` a committed run whose config and seeds to repeat (every version and data
    fingerprint that differs is logged as a warning); `runner` subprocess (this Python environment) or container
    (each step in `image`, training and evaluation in `train_image`). Returns the run's layout and every evaluated
    arm's results."""
    if runner not in RUNNERS:
        raise ConfigError(f"--runner {runner}: give one of {', '.join(RUNNERS)}")
    origin = None
    config_text = config.read_text(encoding="utf-8") if config else ""
    if like:
        if preset or config:
            raise ConfigError("--like repeats a run's own config: give it without --preset or --config")
        config_text, origin = like_run(like)
        for line in like_warnings({k: v for k, v in origin.items() if k != "splits"}, environment()):
            log.warning("%s", line)
    if not preset and not config_text:
        raise ConfigError("give --preset NAME or --config FILE")
    extra = [f"store={store_uri}"] if store_uri else []
    cfg = load_config(
        preset=preset, text=config_text or None, overrides=[*(overrides or []), *extra], arms=arms or None
    ).with_seeds()
    tracking.check_at_start(cfg)  # here, not in the init task's log
    with contextlib.ExitStack() as stack:
        kfp_runner = None
        if runner == "container":  # all it needs is checked before the run's folder is made
            kfp_runner, image, train_image = container_setup(stack, store.normalize(cfg.store), image, train_image)
        if run_id is None:  # an empty --run-id is refused by the layout's rule, not quietly replaced by a new id
            run_id = new_run_id()
        run = RunLayout.create(store.normalize(cfg.store), cfg.experiment, run_id)
        if like and run.uri.rstrip("/") == RunLayout(store.normalize(like)).uri.rstrip("/"):
            # Every step would find its output committed: the original's Table 1, shown as a reproduction.
            raise ConfigError(
                f"--like with --run-id {run_id}: that is the run to repeat; give another --run-id, or none"
            )
        study.check_same_config(run, cfg)  # a resume: before anything runs, and before the arms are announced
        params = {
            "preset": preset or "",
            "config": config_text,
            "overrides": [*(overrides or []), f"store={store.normalize(cfg.store)}"],
            "store": "",
            "run_id": run_id,
            "arms": ",".join(arms or []),
            "image": train_image,
        }
        root = pipeline_root or Path(tempfile.mkdtemp(prefix="medrl-kfp-"))
        log.info("running study %s (arms: %s) as run %s; task logs in %s", cfg.name, ", ".join(cfg.arms), run_id,
                 store.join(run.uri, "logs"))  # fmt: skip
        logs = root / "logs"
        try:
            with run.lease():  # a second `medrl run` with the same run id stops instead of writing into this one
                run_local(params, root, logs, local_tasks(len(cfg.arms)), verbose, kfp_runner, (image, train_image))
        finally:
            for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
                store.put_file(store.join(run.uri, "logs", path.name), path)
    if origin is not None and store.exists(run.provenance):
        now = json.loads(store.read_text(run.provenance))
        for line in like_warnings({"splits": origin.get("splits", {})}, {"splits": now.get("splits", {})}):
            log.warning("%s", line)
    return run, study.collect(run.uri)


def container_setup(stack: contextlib.ExitStack, store_uri: str, image: str, train_image: str):
    """What the container runner needs, checked before any step: an S3 store, an engine (started here if it is
    Podman's service, and stopped when `stack` closes), both images built. Returns a maker of the DockerRunner for
    a pipeline root, and the images as the engine names them."""
    try:
        from medrl.pipelines import containers  # the docker SDK: an extra, for this runner alone
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"--runner container needs the Docker SDK ({err}): pip install 'medrl[container]' (or pip install docker)"
        ) from None
    containers.check_store(store_uri)
    client = stack.enter_context(containers.engine())
    image = containers.local_image(client, image, "--image")
    train_image = containers.local_image(client, train_image, "--train-image")
    log.info("steps in containers (%s): %s, training and evaluation in %s", containers.describe_engine(client), image,
             train_image)  # fmt: skip
    return containers.container_runner, image, train_image
