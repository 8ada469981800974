"""A study run as five steps over one run folder in the store: init, prep, train(arm), evaluate(arm), report.

The Kubeflow components, `medrl run` (through kfp.local) and the PyTorchJob entrypoint all call these
functions; each reads the run's frozen `config.yaml` and writes committed artifacts. Steps whose output is
already committed return it without redoing the work, so a re-tried pipeline resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from medrl import provenance, store, tracking
from medrl.config import MAX_LEVELS, ConfigError, StudyConfig, config_from_text, dump_config, load_config
from medrl.cost import Meter, total
from medrl.data.prep import prepare
from medrl.kfp.parameters import STORE_ENV, arm_list, parameter_overrides
from medrl.metrics import pushgateway as prom
from medrl.report import ArmResult, build_report, slim_predictions
from medrl.report.build import scalar_metrics
from medrl.store.layout import RunLayout, new_run_id

log = logging.getLogger("medrl")


def init_run(
    preset: str | None = None,
    config_text: str | None = None,
    overrides: list[str] | None = None,
    store_uri: str | None = None,
    run_id: str | None = None,
    arms: list[str] | None = None,
) -> str:
    """Resolve the configuration, freeze it as `<run>/config.yaml`, build a tiny base model if asked; return
    the run's URI."""
    overrides = list(overrides or [])
    if store_uri:
        overrides.append(f"store={store_uri}")
    cfg = load_config(preset=preset, text=config_text, overrides=overrides, arms=arms or None).with_seeds()
    cfg.store = store.normalize(cfg.store)
    # The torch-free steps (init, arms, report) import this package; what needs torch is imported where used.
    from medrl.train.rollout import check_vllm_models  # lazy: torch, for the vLLM cases only

    check_vllm_models(cfg)  # before anything is written
    run = RunLayout.create(cfg.store, cfg.experiment, run_id or new_run_id())
    if store.exists(run.config):
        check_same_config(run, cfg)
        _, frozen = load_run(run.uri)
        tracked(frozen, run, "init", lambda t: t.study_run())
        return run.uri  # a retried init: the frozen config stands
    cfg = tracking.resolve(cfg, run)  # an unreachable tracking server stops the run here, before any work
    if cfg.model.base.startswith("tiny:"):
        from medrl.models.tiny import build_tiny  # lazy: transformers and torch, for a tiny base only

        if not store.is_committed(run.base_model):
            with store.commit_dir(run.base_model) as out:
                build_tiny(cfg.model.base[len("tiny:") :], out, seed=cfg.data.seed)
        cfg.model.base = run.base_model
    if len(cfg.levels()) > MAX_LEVELS:
        raise ValueError(f"arms: chains of more than {MAX_LEVELS} arms (init: arm:...) are not supported")
    store.write_text(run.config, dump_config(cfg))
    tracked(cfg, run, "init", lambda t: t.study_run())
    log.info("run %s initialised with arms %s", run.run_id, ", ".join(cfg.arms))
    return run.uri


def check_same_config(run: RunLayout, cfg: StudyConfig) -> None:
    """Refuse to go on with run `run` under `cfg` when it differs from the configuration frozen at the run's start
    (a ConfigError naming each differing setting, the run's value and the new one). A run never takes a new
    configuration: its arms and report must come from one, and the frozen config.yaml is what every step reads;
    so a resume gives the same configuration, and a changed one goes to a new run id."""
    if not store.exists(run.config):
        return
    frozen = config_from_text(store.read_text(run.config))
    now = cfg.model_copy(deep=True)
    now.store = store.normalize(now.store)
    if now.tracking.mlflow_uri is None:
        now.tracking.mlflow_uri = frozen.tracking.mlflow_uri  # init froze the server it took from the environment
    if now.model.base.startswith("tiny:") and frozen.model.base == run.base_model:
        now.model.base = run.base_model  # init_run froze the tiny model it built in the base's place
    changes = config_changes(frozen.model_dump(mode="json"), now.model_dump(mode="json"))
    if changes:
        shown = "; ".join(changes[:12]) + (f"; and {len(changes) - 12} more" if len(changes) > 12 else "")
        raise ConfigError(
            f"run {run.run_id} was started with another configuration ({run.config}); changed: {shown}. A run keeps "
            "the configuration it started with: to resume it, give that one again; to run this one, give a new "
            "--run-id (an arm can start from this run's models with init: <the model's store URI>)"
        )


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Each setting that differs between two dumped configurations, as `key: old -> new` (values cut short).

    >>> config_changes({"train": {"learning_rate": 1e-06, "seed": 0}}, {"train": {"learning_rate": 1e-05, "seed": 0}})
    ['train.learning_rate: 1e-06 -> 1e-05']
    """
    changes: list[str] = []
    for key in dict.fromkeys([*old, *new]):
        where = f"{prefix}{key}"
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, where + ".")
        elif a != b:
            changes.append(f"{where}: {_short(a)} -> {_short(b)}")
    return changes


_ABSENT = object()


def _short(value: object) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def live_log(cfg: StudyConfig, run: RunLayout, arm: str):
    """The callback that sends an arm's training metrics to its MLflow run while it trains; None when untracked."""
    runs = tracking.StudyTracking.open(cfg, run, f"train-{arm}")
    run_id = runs.arm_run(arm) if runs else None
    if runs is None or run_id is None:
        if runs:
            runs.close()
        return None
    from medrl.tracking.live import LiveLog

    return LiveLog(runs, run_id, runs.logged_step(run_id))


def tracked(cfg: StudyConfig, run: RunLayout, stage: str, log_to: Callable[[tracking.StudyTracking], object]) -> None:
    """Log a step's results to MLflow when the run is tracked; a failing server is noted, never raised."""
    runs = tracking.StudyTracking.open(cfg, run, stage)
    if runs is not None:
        log_to(runs)
        runs.close()


def load_run(run_uri: str) -> tuple[RunLayout, StudyConfig]:
    run = RunLayout(run_uri)
    return run, config_from_text(store.read_text(run.config))


def arms_at_level(run_uri: str, level: int) -> list[str]:
    _, cfg = load_run(run_uri)
    levels = cfg.levels()
    return levels[level] if level < len(levels) else []


def prep(run_uri: str) -> str:
    run, cfg = load_run(run_uri)
    if not store.is_committed(run.data):
        with prom.batch_stage("prep", run.run_id) as pushed, store.commit_dir(run.data) as out:
            with Meter() as meter:
                summary = prepare(cfg.data, out)
            pushed.prep(summary)
        store.write_text(run.prep_cost, json.dumps(meter.record, indent=2) + "\n")
        log.info(
            "prepared %d train / %d test rows (%d quarantined)",
            summary["train"],
            summary["test"],
            summary["quarantined"],
        )
    if not store.exists(run.provenance):
        write_provenance(run, cfg)
    return run.data


def run_seeds(cfg: StudyConfig) -> dict:
    """Every seed a run depends on: the data draw, each trained arm's training, the bootstrap."""
    trained = {name: spec.seed for name, spec in cfg.arms.items() if spec.method != "none"}
    return {"data": cfg.data.seed, "train": trained, "evaluate": cfg.evaluate.seed, "seeds": cfg.seeds}


def write_provenance(run: RunLayout, cfg: StudyConfig) -> str:
    """`<run>/provenance.json`: this environment, the frozen config, its seeds and the prepared splits'
    fingerprints (written once the data is committed; `medrl run --like` compares against it)."""
    doc = provenance.record(store.read_text(run.config), run_seeds(cfg), store.open_dir(run.data))
    store.write_text(run.provenance, json.dumps(doc, indent=2) + "\n")
    return run.provenance


def model_of(run: RunLayout, cfg: StudyConfig, arm: str) -> str:
    """The model an arm evaluates: its trained model, or for `method: none` the model it starts from."""
    if cfg.arms[arm].method == "none":
        return init_of(run, cfg, arm)
    return run.arm(arm).model


def init_of(run: RunLayout, cfg: StudyConfig, arm: str) -> str:
    init = cfg.arms[arm].init
    if init == "base":
        return cfg.arms[arm].model or cfg.model.base
    if init.startswith("arm:"):
        return model_of(run, cfg, init[4:])
    return init


def record_cost(uri: str, step: str, record: dict) -> dict:
    """Add one step's cost (train, evaluate) to an arm's cost.json; returns the whole document."""
    doc = json.loads(store.read_text(uri)) if store.exists(uri) else {}
    doc[step] = record
    store.write_text(uri, json.dumps(doc, indent=2) + "\n")
    return doc


def push_arm_cost(run_id: str, arm: str, cost: dict) -> None:
    """An arm's training and evaluation cost as gauges (grouping: job medrl_cost, run id, arm)."""
    pushed = prom.StageMetrics("cost")
    for step in ("train", "evaluate"):
        if step in cost:
            pushed.set(
                f"arm_{step}_seconds", cost[step]["wall_seconds"], f"Wall-clock seconds of the arm's {step} step."
            )
    steps = [cost[s] for s in ("train", "evaluate") if s in cost]
    pushed.set("arm_cpu_seconds", sum(r["cpu_seconds"] for r in steps), "CPU seconds the arm's steps used.")
    pushed.set("arm_gpu_seconds", sum(r["gpu_seconds"] for r in steps), "GPU seconds the arm's steps held.")
    prom.push("cost", pushed.registry, run_id, arm)


def study_cost(run: RunLayout, cfg: StudyConfig) -> dict:
    """Cost of each arm (train, evaluate) and of the study (prep and every arm): see medrl.cost."""
    prep_cost = json.loads(store.read_text(run.prep_cost)) if store.exists(run.prep_cost) else None
    arms = {}
    for name in cfg.arms:
        uri = run.arm(name).cost
        arms[name] = json.loads(store.read_text(uri)) if store.exists(uri) else {}
    records = [prep_cost] if prep_cost else []
    records += [r for doc in arms.values() for r in doc.values()]
    return {"prep": prep_cost, "arms": arms, "study": total(records)}


def collect(run_uri: str) -> list:
    """Every arm's results, in the order of the config (arms not evaluated are left out)."""
    run, cfg = load_run(run_uri)
    summary = json.loads((store.open_dir(run.data) / "summary.json").read_text())
    results = []
    for name, spec in cfg.arms.items():
        paths = run.arm(name)
        if not store.exists(paths.metrics):
            continue
        metrics = json.loads(store.read_text(paths.metrics))["metrics"]
        train_log = []
        if store.exists(paths.train_log):
            train_log = [json.loads(line) for line in store.read_text(paths.train_log).splitlines() if line]
        predictions = slim_predictions(store.read_text(paths.predictions)) if store.exists(paths.predictions) else []
        results.append(ArmResult(name, spec.label, spec.method, summary.get("train"), metrics, train_log, predictions))
    return results


def report(run_uri: str) -> str:
    """Write the report of every evaluated arm; returns the URI of the report folder."""
    run, cfg = load_run(run_uri)
    retention = prom.retention_seconds()
    with prom.batch_stage("report", run.run_id) as pushed, store.commit_dir(run.report) as out:
        results = collect(run_uri)
        data = json.loads((store.open_dir(run.data) / "summary.json").read_text())
        origin = json.loads(store.read_text(run.provenance)) if store.exists(run.provenance) else None
        cost = study_cost(run, cfg)
        build_report(
            cfg.report.title,
            results,
            out,
            baseline=cfg.baseline_arm(),
            specs=cfg.arms,
            data=data,
            provenance=origin,
            run_uri=run.uri,
            cost=cost,
            tracking=tracking.incomplete_notes(run) if cfg.tracking.mlflow_uri else [],
        )
        spent = cost["study"]
        pushed.set(
            "study_wall_seconds", spent["wall_seconds"], "Wall-clock seconds from prep's start to the last arm's end."
        )
        pushed.set("study_cpu_seconds", spent["cpu_seconds"], "CPU seconds of prep and every arm's steps.")
        pushed.set("study_gpu_seconds", spent["gpu_seconds"], "GPU seconds of prep and every arm's steps.")
        pushed.set("report_arms", len(results), "Arms in the report.")
    prom.prune(retention)  # older runs' groups; this run's stay for the retention period
    tracked(cfg, run, "report", lambda t: t.reported(run.report, report_numbers(run.report)))
    return run.report


def report_numbers(report_uri: str) -> dict[str, float]:
    """The report's headline numbers as Kubeflow's Metrics artifact shows them (`<arm>_<metric>`)."""
    return scalar_metrics(json.loads(store.read_text(store.join(report_uri, "summary.json"))))


def forget_metrics(run_uri: str) -> int:
    """Delete the run's groups (prep, evaluate per arm, report) from the Pushgateway now, before their retention
    period is over (the report stage prunes groups older than MEDRL_PUSHGATEWAY_RETENTION_HOURS)."""
    run, cfg = load_run(run_uri)
    return prom.delete_run(run.run_id, list(cfg.arms))


def init_from_parameters(store: str = "", run_id: str = "", **params: Any) -> str:
    """The pipeline's init step (`params`: the other STUDY_PARAMETERS): named parameters become overrides, then
    `medrl.study.init_run`."""
    overrides = parameter_overrides(**params)
    preset, config, arms = params.get("preset", ""), params.get("config", ""), params.get("arms", "")
    if not store and not any(o.startswith("store=") for o in overrides):
        store = os.environ.get(STORE_ENV, "")
    return init_run(
        preset=preset or None,
        config_text=config or None,
        overrides=overrides,
        store_uri=store or None,
        run_id=run_id or None,
        arms=arm_list(arms),
    )
