"""The steps of a study run that need torch: train one arm (every rank of its job), evaluate one arm. The rest of
the run's life (init, the arms of each level, the report) is `medrl.study`, which imports no torch, so the steps
that only orchestrate start fast and run on the slim image."""

from __future__ import annotations

import json
import logging
import os
import shutil

from medrl import store
from medrl.config import ConfigError, StudyConfig
from medrl.cost import Meter
from medrl.evaluate import evaluate_model, metrics_complete, rescore
from medrl.metrics import pushgateway as prom
from medrl.rewards import custom_reward
from medrl.store import checkpoints
from medrl.store.layout import ArmLayout
from medrl.study import init_of, live_log, load_run, model_of, push_arm_cost, record_cost, tracked
from medrl.train.run import rank, scratch_work_dir, train_to_store

log = logging.getLogger("medrl")


def train_in_run(run_uri: str, arm: str) -> str:
    """Train one arm; returns the URI of the model it evaluates. Under torchrun every rank calls this: all train,
    rank 0 commits the model, the log and the checkpoints. A retried step resumes from the newest committed
    checkpoint in the store."""
    run, cfg = load_run(run_uri)
    spec = cfg.arms[arm]
    if spec.method == "none" or store.is_committed(run.arm(arm).model):
        if spec.method != "none" and rank() == 0:  # a retry after training: what the last attempt left undone
            finish_trained(run.arm(arm))
            tracked(cfg, run, f"train-{arm}", lambda t: t.trained(arm, run.arm(arm).model))
        return model_of(run, cfg, arm)
    check_custom_rewards(cfg)
    paths = run.arm(arm)
    live = live_log(cfg, run, arm) if rank() == 0 else None
    keep_after = keep_checkpoints_after()  # a bad setting fails now, not after training
    work_dir = scratch_work_dir(paths.model)  # local, and the same folder for every rank of a node
    upload = checkpoints.Target(paths.checkpoints, spec.save_total_limit)
    with Meter() as meter:
        summary = train_to_store(
            cfg, arm, run.data, paths.model, init_of(run, cfg, arm), work=work_dir, resume=True, upload=upload,
            callbacks=[live] if live else None,
        )  # fmt: skip
    node = checkpoints.Node.from_env()
    if rank() == 0:
        record_cost(paths.cost, "train", meter.record)
        log_file = work_dir / "train_log.jsonl"
        if log_file.exists():
            store.put_file(paths.train_log, log_file)
        # The model is committed: the checkpoints have done their work (a full fine-tune's are tens of GB each).
        checkpoints.prune_after_commit(paths.checkpoints, keep_after, node.count)
        shutil.rmtree(work_dir, ignore_errors=True)  # the model, log and checkpoints are in the store now
        log.info("arm %s trained: %s steps", arm, summary.get("global_step"))
        if live:
            live.runs.close()
        tracked(cfg, run, f"train-{arm}", lambda t: t.trained(arm, paths.model))
    elif os.environ.get("LOCAL_RANK", "0") == "0":
        shutil.rmtree(work_dir, ignore_errors=True)  # another node's copy of its checkpoints
    return paths.model


def finish_trained(paths: ArmLayout) -> None:
    """What follows the model's commit in `train_in_run`, for an attempt that died right after it (a kill, a store
    outage): without this the arm kept no train_log.jsonl (the report drew no curves, and said nothing) and every
    checkpoint stayed in the store. The log comes from the model's own copy."""
    if not store.exists(paths.train_log):
        data = store.member(paths.model, "train_log.jsonl")
        if data is not None:
            store.write_bytes(paths.train_log, data)
            log.warning("the arm's train_log.jsonl was missing beside its model; restored from the model's copy")
    checkpoints.prune_after_commit(paths.checkpoints, keep_checkpoints_after(), checkpoints.Node.from_env().count)


def check_custom_rewards(cfg: StudyConfig) -> None:
    """Imports and checks the user's own reward functions of every arm of the study, in the training image, before
    any arm trains: one that cannot be used stops the study's first training step (the SFT an RL arm starts from, say),
    not the arm that uses it hours later."""
    for name, spec in cfg.arms.items():
        for reward in getattr(spec, "rewards", []):
            if ":" in reward.name:
                try:
                    custom_reward(reward.name)
                except ConfigError as err:
                    raise ConfigError(f"arm {name}: {err}") from None


KEEP_AFTER_ENV = "MEDRL_KEEP_CHECKPOINTS_AFTER"


def keep_checkpoints_after() -> int:
    """How many of an arm's store checkpoints stay once its model is committed: MEDRL_KEEP_CHECKPOINTS_AFTER, default
    0 (the model is the result; a checkpoint only serves to finish the run). Keep some to continue training later."""
    text = os.environ.get(KEEP_AFTER_ENV, "").strip() or "0"
    if not text.isdigit():
        raise ConfigError(f"{KEEP_AFTER_ENV}={text!r}: give how many checkpoints to keep after training (0 or more)")
    return int(text)


def evaluate_in_run(run_uri: str, arm: str) -> str:
    """Evaluate one arm on the test split; returns the URI of its metrics.json."""
    run, cfg = load_run(run_uri)
    paths = run.arm(arm)
    if store.exists(paths.metrics):
        done = json.loads(store.read_text(paths.metrics))
        if metrics_complete(done["metrics"]) or not store.exists(paths.predictions):
            tracked(cfg, run, f"evaluate-{arm}", lambda t: t.evaluated(arm, done["metrics"], model_of(run, cfg, arm)))
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
    tracked(cfg, run, f"evaluate-{arm}", lambda t: t.evaluated(arm, metrics, model_of(run, cfg, arm)))
    accuracy = (metrics.get("accuracy") or {}).get("mean")
    log.info("arm %s: %d questions scored, accuracy %s", arm, len(rows), "-" if accuracy is None else f"{accuracy:.3f}")
    return paths.metrics
