"""Batch stages' metrics (prep, evaluate, report) pushed to the Pushgateway, grouped by run id, and the groups of
old runs pruned. A Pushgateway outage never fails a stage."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import urllib.request
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import delete_from_gateway, push_to_gateway

from medrl.metrics import MetricsError, safe_label
from medrl.metrics.judge import JUDGE_COLLECTORS

log = logging.getLogger("medrl.metrics")

PUSHGATEWAY_ENV = "MEDRL_PUSHGATEWAY_URL"
RETENTION_ENV = "MEDRL_PUSHGATEWAY_RETENTION_HOURS"
DEFAULT_RETENTION_HOURS = 168.0

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def pushgateway_url() -> str | None:
    """MEDRL_PUSHGATEWAY_URL, e.g. http://pushgateway.monitoring:9091; unset: batch stages push nothing."""
    return os.environ.get(PUSHGATEWAY_ENV, "").strip() or None


def grouping(run_id: str, arm: str | None) -> dict[str, str]:
    key = {"run_id": safe_label(run_id)}
    if arm:
        key["arm"] = safe_label(arm)
    return key


class StageMetrics:
    """The gauges one batch stage pushes; the grouping key (job, run id, arm) labels them at the Pushgateway."""

    def __init__(self, stage: str, judge: bool = False):
        self.stage = stage
        self.registry = CollectorRegistry()
        if judge:
            for collector in JUDGE_COLLECTORS:
                self.registry.register(collector)

    def set(self, name: str, value: float | None, doc: str) -> None:
        """Set gauge `medrl_<name>`; None values (not measured) are left out."""
        if value is None:
            return
        if not _NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r}: use lowercase letters, digits and '_'")
        Gauge(f"medrl_{name}", doc, registry=self.registry).set(float(value))

    def prep(self, summary: dict) -> None:
        self.set("prep_source_rows", summary.get("rows"), "Rows read from the source.")
        self.set("prep_train_rows", summary.get("train"), "Rows in the prepared training split.")
        self.set("prep_test_rows", summary.get("test"), "Rows in the prepared test split.")
        self.set("prep_quarantined_rows", summary.get("quarantined"), "Rows set aside with a reason (quarantine).")

    def evaluation(self, metrics: dict, questions: int) -> None:
        """Each metric of an evaluation (mean, std, n, missing) as `medrl_eval_<metric>_<stat>`."""
        self.set("eval_questions", questions, "Test questions evaluated.")
        for key, summary in metrics.items():
            if not isinstance(summary, dict) or not _NAME.fullmatch(key):
                continue
            self.set(f"eval_{key}_mean", summary.get("mean"), f"Mean of {key} over the test questions.")
            self.set(f"eval_{key}_std", summary.get("std"), f"Population std of {key} over the test questions.")
            self.set(f"eval_{key}_missing", summary.get("missing"), f"Questions whose {key} could not be measured.")


@contextlib.contextmanager
def batch_stage(stage: str, run_id: str, arm: str | None = None, judge: bool = False) -> Iterator[StageMetrics]:
    """Time a batch stage and push its metrics to the Pushgateway when it ends (if one is configured).

    Grouping key: job `medrl_<stage>`, `run_id` (and `arm`). Pushing never fails the stage.
    """
    pushed = StageMetrics(stage, judge=judge)
    start, ok = time.time(), False
    try:
        yield pushed
        ok = True
    finally:
        pushed.set("stage_duration_seconds", time.time() - start, "Wall-clock seconds the stage ran.")
        pushed.set("stage_success", 1.0 if ok else 0.0, "1 if the stage finished, 0 if it failed.")
        pushed.set("stage_last_run_timestamp_seconds", time.time(), "Unix time the stage ended.")
        push(stage, pushed.registry, run_id, arm)


def push(stage: str, registry: CollectorRegistry, run_id: str, arm: str | None = None) -> bool:
    url = pushgateway_url()
    if not url:
        return False
    try:
        push_to_gateway(url, job=f"medrl_{stage}", registry=registry, grouping_key=grouping(run_id, arm), timeout=10)
        return True
    except Exception as err:  # metrics are an aid: a Pushgateway outage must not fail a study
        log.warning("metrics of stage %s not pushed to %s: %s", stage, PUSHGATEWAY_ENV, type(err).__name__)
        return False


def delete_run(run_id: str, arms: list[str] | tuple[str, ...] = ()) -> int:
    """Delete the Pushgateway groups of a run's batch stages (prep, report, and evaluate and cost per arm)."""
    url = pushgateway_url()
    if not url:
        return 0
    groups = [("prep", None), ("report", None)] + [(stage, arm) for arm in arms for stage in ("evaluate", "cost")]
    deleted = 0
    for stage, arm in groups:
        try:
            delete_from_gateway(url, job=f"medrl_{stage}", grouping_key=grouping(run_id, arm), timeout=10)
            deleted += 1
        except Exception as err:
            log.warning("metrics group of stage %s not deleted from %s: %s", stage, PUSHGATEWAY_ENV, type(err).__name__)
    return deleted


def retention_seconds() -> float:
    """How long a run's pushed groups stay: MEDRL_PUSHGATEWAY_RETENTION_HOURS (default a week)."""
    text = os.environ.get(RETENTION_ENV, "").strip()
    try:
        hours = float(text) if text else DEFAULT_RETENTION_HOURS
    except ValueError:
        hours = -1.0
    if not hours >= 0:
        raise MetricsError(f"{RETENTION_ENV}={text!r}: give the hours a run's metrics stay on the Pushgateway")
    return hours * 3600


def prune(max_age_seconds: float, now: float | None = None) -> int:
    """Delete medrl's Pushgateway groups last pushed more than `max_age_seconds` ago; returns how many.

    Groups are keyed by run id, so they would pile up. They are kept a while rather than deleted when a run ends:
    Prometheus must scrape them, and alerts on evaluation results need them to stay for their `for:` period.
    Pruning never fails the stage that calls it.
    """
    url = pushgateway_url()
    if not url:
        return 0
    base = url if "://" in url else f"http://{url}"
    try:
        with urllib.request.urlopen(f"{base.rstrip('/')}/api/v1/metrics", timeout=10) as reply:
            groups = json.loads(reply.read())["data"]
    except Exception as err:
        log.warning("metrics groups not listed from %s: %s", PUSHGATEWAY_ENV, type(err).__name__)
        return 0
    now = time.time() if now is None else now
    deleted = 0
    for group in groups:
        key = dict(group.get("labels", {}))
        job = key.pop("job", "")
        try:
            pushed_at = float(group["push_time_seconds"]["metrics"][0]["value"])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if not job.startswith("medrl_") or now - pushed_at <= max_age_seconds:
            continue
        try:
            delete_from_gateway(url, job=job, grouping_key=key, timeout=10)
            deleted += 1
        except Exception as err:
            log.warning("metrics group of %s not deleted from %s: %s", job, PUSHGATEWAY_ENV, type(err).__name__)
    if deleted:
        log.info("removed %d metrics group(s) older than %.0f h from the Pushgateway", deleted, max_age_seconds / 3600)
    return deleted
