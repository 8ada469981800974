"""Live metrics and nothing leaking, on real servers: Prometheus scrapes a tiny GRPO run's /metrics; the
evaluation's metrics reach the Pushgateway and its group is deleted after; a run on data whose questions,
image paths and patient fields carry markers shows none of them in logs, /metrics, the Pushgateway or an
exception message. Store: SeaweedFS. (Slow: one tiny GRPO run, about half a minute on 2 cores.)"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import traceback
import urllib.parse
import urllib.request

import pytest
from transformers import TrainerCallback

from medrl import metrics, store, study
from medrl.metrics import pushgateway as push_metrics
from medrl.store import s3
from medrl.store.layout import RunLayout
from medrl.study import arm as arm_steps
from medrl.train import common
from tests.support.servers import Prometheus, Pushgateway, free_ports, s3_environment, wait_until
from tests.support.tiny_runs import MARKERS, PATH_MARK, QUESTION_MARK, Capture, canary_dataset, grpo_study

pytestmark = pytest.mark.slow

RUN_ID = "observed-1"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def promql(server: Prometheus, path: str, **params) -> list:
    doc = json.loads(get(f"{server.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


class AwaitScrape(TrainerCallback):
    """Holds training after step 3 of 6 until Prometheus has scraped it: scraping is shown to happen while
    training runs, whatever the machine's speed (Prometheus may take seconds to scrape a new target)."""

    def __init__(self, prometheus: Prometheus):
        self.prometheus = prometheus

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            query = f'medrl_train_global_step{{arm="grpo"}} == {state.global_step}'
            wait_until(
                lambda: promql(self.prometheus, "query", query=query), 60, f"a scrape of step {state.global_step}"
            )


@pytest.fixture(scope="module")
def observed(tmp_path_factory, seaweed):
    root = tmp_path_factory.mktemp("observed")
    port = free_ports(1)[0]
    prometheus = Prometheus(root / "prometheus", [f"127.0.0.1:{port}"])
    pushgateway = Pushgateway(root / "pushgateway")
    prometheus.start()
    pushgateway.start()
    found: dict = {"prometheus": prometheus}
    capture = Capture()
    loggers = [logging.getLogger(), logging.getLogger("transformers"), logging.getLogger("datasets")]
    levels = [lg.level for lg in loggers]
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        bucket = s3_environment(mp, seaweed, root)
        mp.setenv(metrics.PORT_ENV, str(port))
        mp.setenv(metrics.ADDR_ENV, "127.0.0.1")
        mp.setenv(push_metrics.PUSHGATEWAY_ENV, pushgateway.url)
        callbacks = common.training_callbacks
        mp.setattr(common, "training_callbacks", lambda *a, **k: [*callbacks(*a, **k), AwaitScrape(prometheus)])
        for lg in loggers:
            lg.addHandler(capture)
            lg.setLevel(logging.DEBUG)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                run_uri = study.init_run(config_text=grpo_study(), store_uri=bucket, run_id=RUN_ID)
                run = RunLayout(run_uri)
                store.commit_from(canary_dataset(root / "canary"), run.data)
                found["train_window"] = [time.time()]
                arm_steps.train_in_run(run_uri, "grpo")
                found["train_window"].append(time.time())
                found["exporter"] = get(f"http://127.0.0.1:{port}/metrics")
                arm_steps.evaluate_in_run(run_uri, "grpo")
                found["groups_after_evaluate"] = json.loads(get(f"{pushgateway.url}/api/v1/metrics"))["data"]
                found["train_log"] = [json.loads(x) for x in store.read_text(run.arm("grpo").train_log).splitlines()]
                found["metrics"] = json.loads(store.read_text(run.arm("grpo").metrics))["metrics"]
                found["pushed_text"] = get(f"{pushgateway.url}/metrics")
                study.report(run_uri)
                found["pushed_text"] += get(f"{pushgateway.url}/metrics")
                found["deleted"] = study.forget_metrics(run_uri)
                found["groups_after_delete"] = json.loads(get(f"{pushgateway.url}/api/v1/metrics"))["data"]

                # The markers really are in play: in the stored records and in the stored object names.
                found["records"] = (store.open_dir(run.data) / "train.jsonl").read_text()
                found["image_names"] = store.list_dir(store.join(run.data, "images"))
                # An exception about patient files: one image is damaged in the store, read from a cold cache.
                bucket_name, key = s3.split(store.join(run.data, "images", found["image_names"][0]))
                seaweed.client().put_object(bucket_name, key, io.BytesIO(b"not a png"), 9)
                mp.setenv("MEDRL_CACHE_DIR", str(root / "cold-cache"))
                try:
                    store.open_dir(run.data)
                except store.IntegrityError as exc:
                    found["exception"] = "".join(traceback.format_exception(exc))
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.removeHandler(capture)
                lg.setLevel(level)
    found.update(logs="\n".join(capture.lines), stdout=out.getvalue(), stderr=err.getvalue())
    yield found
    metrics.stop_serving()  # only now: a vanished target's series go stale in Prometheus at once
    prometheus.stop()
    pushgateway.stop()


def test_prometheus_scrapes_the_training_exporter(observed):
    prometheus = observed["prometheus"]
    rewards = wait_until(
        lambda: promql(prometheus, "query", query='medrl_train_reward{arm="grpo"}'), 30, "medrl_train_reward in PromQL"
    )
    last = [r["reward"] for r in observed["train_log"] if "reward" in r][-1]  # the last step's mean reward
    assert rewards[0]["metric"]["job"] == "medrl-train" and float(rewards[0]["value"][1]) == pytest.approx(last)
    step = promql(prometheus, "query", query='medrl_train_global_step{arm="grpo"}')
    assert float(step[0]["value"][1]) == 6
    # The counter is per process: other runs in this process (other tests) may have added to it.
    steps = promql(prometheus, "query", query='medrl_train_steps_total{arm="grpo"}')
    assert float(steps[0]["value"][1]) >= 6
    # Scraped while training ran, not only afterwards (AwaitScrape held step 3 until scraped).
    start, end = observed["train_window"]
    history = promql(
        prometheus, "query_range", query='medrl_train_global_step{arm="grpo"}', start=start, end=end, step=0.1
    )
    assert history, f"no scrape of medrl_train_global_step between {start} and {end}"
    assert 3.0 in {float(v) for _, v in history[0]["values"]}, history  # step 3 of 6: mid-run
    for name in ("medrl_train_completion_length_mean_tokens", "medrl_train_step_seconds", "medrl_train_kl"):
        assert promql(prometheus, "query", query=f'{name}{{arm="grpo"}}'), name


def test_evaluation_metrics_reach_the_pushgateway_and_their_group_is_deleted(observed):
    def ours(groups):
        return [g for g in groups if g["labels"].get("run_id") == RUN_ID]

    evaluate = [g for g in ours(observed["groups_after_evaluate"]) if g["labels"]["job"] == "medrl_evaluate"]
    assert len(evaluate) == 1 and evaluate[0]["labels"]["arm"] == "grpo"
    pushed = {
        name: family["metrics"][0].get("value")
        for name, family in evaluate[0].items()
        if isinstance(family, dict) and "metrics" in family
    }
    assert float(pushed["medrl_eval_questions"]) == 8 and float(pushed["medrl_stage_success"]) == 1
    assert float(pushed["medrl_eval_accuracy_mean"]) == pytest.approx(observed["metrics"]["accuracy"]["mean"])
    assert "medrl_judge_requests_total" in pushed and "medrl_stage_duration_seconds" in pushed
    # the arm's cost (issue 28) is pushed as its own group, and deleted with the run's others
    [cost] = [g for g in ours(observed["groups_after_evaluate"]) if g["labels"]["job"] == "medrl_cost"]
    assert cost["labels"]["arm"] == "grpo" and float(cost["medrl_arm_train_seconds"]["metrics"][0]["value"]) > 0
    assert observed["deleted"] == 4  # prep, report, and the arm's evaluate and cost groups
    assert ours(observed["groups_after_delete"]) == []


def test_markers_never_leave_the_process(observed):
    assert QUESTION_MARK in observed["records"] and all(PATH_MARK in n for n in observed["image_names"])
    assert "checkpoint step-6 committed" in observed["logs"]  # logs were captured: the check below can fail
    assert "medrl_train_reward" in observed["exporter"] and "does not match its sha256" in observed["exception"]
    for where in ("logs", "stdout", "stderr", "exporter", "pushed_text", "exception"):
        for marker in MARKERS:
            assert marker not in observed[where], f"{marker} leaked into {where}"


def test_groups_older_than_the_retention_are_pruned(tmp_path, monkeypatch):
    """The report stage prunes the Pushgateway: medrl groups pushed longer ago than the retention go, newer ones
    and other jobs' groups stay (a real Pushgateway)."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    pushgateway = Pushgateway(tmp_path / "pushgateway")
    pushgateway.start()
    try:
        monkeypatch.setenv(push_metrics.PUSHGATEWAY_ENV, pushgateway.url)

        def push_group(job, **key):
            registry = CollectorRegistry()
            Gauge("medrl_stage_success", "test", registry=registry).set(1)
            push_to_gateway(pushgateway.url, job=job, registry=registry, grouping_key=key)

        push_group("medrl_prep", run_id="old-run")
        push_group("someone_else", run_id="old-run")
        time.sleep(1.5)
        push_group("medrl_evaluate", run_id="new-run", arm="grpo")
        assert push_metrics.prune(1.0) == 1
        left = json.loads(get(f"{pushgateway.url}/api/v1/metrics"))["data"]
        assert sorted((g["labels"]["job"], g["labels"]["run_id"]) for g in left) == [
            ("medrl_evaluate", "new-run"),
            ("someone_else", "old-run"),
        ]
        monkeypatch.setenv(push_metrics.RETENTION_ENV, "a week")
        with pytest.raises(metrics.MetricsError, match=push_metrics.RETENTION_ENV):
            push_metrics.retention_seconds()
    finally:
        pushgateway.stop()
