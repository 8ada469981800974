"""A study run as five steps over one run folder in the store: init, prep, train(arm), evaluate(arm), report.

The Kubeflow components, `medrl run` (through kfp.local) and the PyTorchJob entrypoint all call these
functions; each reads the run's frozen `config.yaml` and writes committed artifacts. Steps whose output is
already committed return it without redoing the work, so a re-tried pipeline resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from medrl.config import MAX_LEVELS, StudyConfig, config_from_text, dump_config, load_config
from medrl.cost import Meter
from medrl.infra import checkpoint_store, store
from medrl.infra import metrics as prom
from medrl.infra.layout import RunLayout, new_run_id

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
    run = RunLayout.create(cfg.store, cfg.experiment, run_id or new_run_id())
    if store.exists(run.config):
        return run.uri  # a retried init: the frozen config stands
    if cfg.model.base.startswith("tiny:"):
        from medrl.models.tiny import build_tiny

        if not store.is_committed(run.base_model):
            with store.commit_dir(run.base_model) as out:
                build_tiny(cfg.model.base[len("tiny:") :], out, seed=cfg.data.seed)
        cfg.model.base = run.base_model
    if len(cfg.levels()) > MAX_LEVELS:
        raise ValueError(f"arms: chains of more than {MAX_LEVELS} arms (init: arm:...) are not supported")
    store.write_text(run.config, dump_config(cfg))
    log.info("run %s initialised with arms %s", run.run_id, ", ".join(cfg.arms))
    return run.uri


def load_run(run_uri: str) -> tuple[RunLayout, StudyConfig]:
    run = RunLayout(run_uri)
    return run, config_from_text(store.read_text(run.config))


def arms_at_level(run_uri: str, level: int) -> list[str]:
    _, cfg = load_run(run_uri)
    levels = cfg.levels()
    return levels[level] if level < len(levels) else []


def prep(run_uri: str) -> str:
    from medrl.data.prep import prepare

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
    from medrl import provenance

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


def train(run_uri: str, arm: str) -> str:
    """Train one arm; returns the URI of the model it evaluates. Under torchrun every rank calls this: all train,
    rank 0 commits the model, the log and the checkpoints. A retried step resumes from the newest committed
    checkpoint in the store."""
    from medrl.train.run import rank, scratch_work_dir, train_to_store

    run, cfg = load_run(run_uri)
    spec = cfg.arms[arm]
    if spec.method == "none" or store.is_committed(run.arm(arm).model):
        return model_of(run, cfg, arm)
    paths = run.arm(arm)
    keep_after = keep_checkpoints_after()  # a bad setting fails now, not after training
    work_dir = scratch_work_dir(paths.model)  # local, and the same folder for every rank of a node
    upload = checkpoint_store.Target(paths.checkpoints, spec.save_total_limit)
    with Meter() as meter:
        summary = train_to_store(
            cfg, arm, run.data, paths.model, init_of(run, cfg, arm), work=work_dir, resume=True, upload=upload
        )
    node = checkpoint_store.Node.from_env()
    if rank() == 0:
        record_cost(paths.cost, "train", meter.record)
        log_file = work_dir / "train_log.jsonl"
        if log_file.exists():
            store.put_file(paths.train_log, log_file)
        # The model is committed: the checkpoints have done their work (a full fine-tune's are tens of GB each).
        checkpoint_store.prune_after_commit(paths.checkpoints, keep_after, node.count)
        shutil.rmtree(work_dir, ignore_errors=True)  # the model, log and checkpoints are in the store now
        log.info("arm %s trained: %s steps", arm, summary.get("global_step"))
    elif os.environ.get("LOCAL_RANK", "0") == "0":
        shutil.rmtree(work_dir, ignore_errors=True)  # another node's copy of its checkpoints
    return paths.model


KEEP_AFTER_ENV = "MEDRL_KEEP_CHECKPOINTS_AFTER"


def keep_checkpoints_after() -> int:
    """How many of an arm's store checkpoints stay once its model is committed: MEDRL_KEEP_CHECKPOINTS_AFTER, default
    0 (the model is the result; a checkpoint only serves to finish the run). Keep some to continue training later."""
    from medrl.config import ConfigError

    text = os.environ.get(KEEP_AFTER_ENV, "").strip() or "0"
    if not text.isdigit():
        raise ConfigError(f"{KEEP_AFTER_ENV}={text!r}: give how many checkpoints to keep after training (0 or more)")
    return int(text)


def evaluate(run_uri: str, arm: str) -> str:
    """Evaluate one arm on the test split; returns the URI of its metrics.json."""
    from medrl.evaluate import evaluate_model, metrics_complete, rescore

    run, cfg = load_run(run_uri)
    paths = run.arm(arm)
    if store.exists(paths.metrics):
        done = json.loads(store.read_text(paths.metrics))
        if metrics_complete(done["metrics"]) or not store.exists(paths.predictions):
            return paths.metrics
    with prom.batch_stage("evaluate", run.run_id, arm=arm, judge=True) as pushed, Meter() as meter:
        if store.exists(paths.metrics):
            # A metric was cut short (the judge was down): score the stored answers again, without generating.
            stored = [json.loads(line) for line in store.read_text(paths.predictions).splitlines() if line]
            rows, metrics = rescore(cfg.for_arm(arm), store.open_dir(run.data), stored)
        else:
            rows, metrics = evaluate_model(cfg.for_arm(arm), model_of(run, cfg, arm), store.open_dir(run.data))
        store.write_text(paths.predictions, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        spec = cfg.arms[arm]
        doc = {"arm": arm, "label": spec.label, "method": spec.method, "n": len(rows), "metrics": metrics}
        store.write_text(paths.metrics, json.dumps(doc, indent=2) + "\n")
        pushed.evaluation(metrics, len(rows))
    cost = record_cost(paths.cost, "evaluate", meter.record)
    push_arm_cost(run.run_id, arm, cost)
    accuracy = (metrics.get("accuracy") or {}).get("mean")
    log.info("arm %s: %d questions scored, accuracy %s", arm, len(rows), "-" if accuracy is None else f"{accuracy:.3f}")
    return paths.metrics


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
    from medrl.cost import total

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
    from medrl.report import ArmResult, slim_predictions

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
    from medrl.report import build_report

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
        )
        spent = cost["study"]
        pushed.set(
            "study_wall_seconds", spent["wall_seconds"], "Wall-clock seconds from prep's start to the last arm's end."
        )
        pushed.set("study_cpu_seconds", spent["cpu_seconds"], "CPU seconds of prep and every arm's steps.")
        pushed.set("study_gpu_seconds", spent["gpu_seconds"], "GPU seconds of prep and every arm's steps.")
        pushed.set("report_arms", len(results), "Arms in the report.")
    prom.prune(retention)  # older runs' groups; this run's stay for the retention period
    return run.report


def forget_metrics(run_uri: str) -> int:
    """Delete the run's groups (prep, evaluate per arm, report) from the Pushgateway now, before their retention
    period is over (the report stage prunes groups older than MEDRL_PUSHGATEWAY_RETENTION_HOURS)."""
    run, cfg = load_run(run_uri)
    return prom.delete_run(run.run_id, list(cfg.arms))


# ------------------------------------------------------------------ outside the pipeline: one arm, a local study


def pick_arm(cfg: StudyConfig, arm: str | None) -> str:
    """The arm `medrl train` trains: the one named, else the config's only trained arm."""
    from medrl.config import ConfigError

    if arm:
        if arm not in cfg.arms:
            raise ConfigError(f"--arm {arm}: not in the config; it has {', '.join(cfg.arms)}")
        return arm
    trained = [n for n, a in cfg.arms.items() if a.method != "none"]
    if len(trained) != 1:
        raise ConfigError(f"the config has arms {', '.join(cfg.arms)}: choose one with --arm NAME")
    return trained[0]


def standalone_init(cfg: StudyConfig, arm: str) -> str:
    """The model an arm starts from when it is trained on its own, outside a study run: `init_of` without a run,
    so neither another arm's model nor a tiny model built at init exists."""
    from medrl.config import ConfigError

    init = cfg.arms[arm].init
    if init.startswith("arm:"):
        raise ConfigError(f"arms.{arm}.init={init}: outside a study run, give the model with --init DIR")
    # init_of reads the run only for `arm:` inits, refused above, so there is none to give
    start = init_of(None, cfg, arm)  # type: ignore[arg-type]
    if start.startswith("tiny:"):
        raise ConfigError(f"model.base={start}: build it first (medrl tiny-model --out DIR) and pass --init DIR")
    return start


def model_folder(ref: str, what: str) -> str:
    """`ref` itself, checked when it names a local folder: one that holds a model (config.json), so a wrong path is
    named before any loading. Hub ids and store URIs pass; the hub and the store name their own failures."""
    from medrl.config import ConfigError

    path = Path(ref).expanduser()
    if (path.exists() or ref.startswith(("/", ".", "~"))) and not (path / "config.json").is_file():
        problem = "is not a model folder (no config.json)" if path.exists() else "does not exist"
        raise ConfigError(f"{what} {ref}: {problem}; give a model's folder, a hub id (org/name) or a store URI")
    return ref


def train_standalone(
    cfg: StudyConfig,
    arm: str | None,
    data: str,
    out: str,
    init: str | None = None,
    work: Path | None = None,
    resume: bool = False,
) -> tuple[str, dict]:
    """Train one arm of `cfg` on a prepared dataset into `out`, outside a study run; returns the arm's name and
    the training summary. `init` replaces the arm's own starting model."""
    from medrl.train.run import train_to_store

    name = pick_arm(cfg, arm)
    start = model_folder(init, "--init") if init else standalone_init(cfg, name)
    return name, train_to_store(cfg, name, data, out, start, work=work, resume=resume)


def evaluate_standalone(cfg: StudyConfig, model: str, data: str, out: Path) -> dict:
    """Evaluate `model` on a prepared dataset's test split, outside a study run: predictions.jsonl and
    metrics.json go into the folder `out`; returns the metrics."""
    from medrl.data.records import write_json, write_jsonl
    from medrl.evaluate import evaluate_model

    rows, metrics = evaluate_model(cfg, model_folder(model, "--model"), store.open_dir(store.normalize(data)))
    write_jsonl(out / "predictions.jsonl", rows)
    write_json(out / "metrics.json", {"n": len(rows), "metrics": metrics})
    return metrics


def like_run(ref: str) -> tuple[str, dict]:
    """The frozen config and the provenance of a committed run (one whose data was prepared), for `--like`."""
    from medrl.config import ConfigError

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
    from medrl.provenance import differences

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
) -> tuple[RunLayout, list]:
    """Run a whole study on this machine through the Kubeflow pipeline (kfp.local): every arm, then the report.
    `config` is a study YAML file; `like` a committed run whose config and seeds to repeat (every version and data
    fingerprint that differs is logged as a warning). Returns the run's layout and every evaluated arm's results."""
    import tempfile

    from medrl.config import ConfigError
    from medrl.pipeline import local_tasks, run_local
    from medrl.provenance import environment

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
    run_id = run_id or new_run_id()
    run = RunLayout.create(store.normalize(cfg.store), cfg.experiment, run_id)
    params = {
        "preset": preset or "",
        "config": config_text,
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
    if origin is not None and store.exists(run.provenance):
        now = json.loads(store.read_text(run.provenance))
        for line in like_warnings({"splits": origin.get("splits", {})}, {"splits": now.get("splits", {})}):
            log.warning("%s", line)
    return run, collect(run.uri)
