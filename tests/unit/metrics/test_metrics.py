"""Metric names and labels follow the rules (medrl_ prefix, base units, *_total counters, bounded labels);
TRL's log records feed the training gauges; batch stages push nothing without a Pushgateway."""

import ast
import gzip
import inspect
import json
import logging
import socket
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from medrl import metrics
from medrl.config import OpenAIJudgeConfig
from medrl.judge import openai
from medrl.metrics import judge as judge_metrics
from medrl.metrics import pushgateway as push_metrics

# One record as TRL 1.16's GRPOTrainer logs it (keys from a real run; values rounded).
TRL_RECORD = {
    "loss": 0.0123,
    "grad_norm": 0.5,
    "learning_rate": 5e-05,
    "num_tokens": 12000.0,
    "completions/mean_length": 31.5,
    "completions/min_length": 12.0,
    "completions/max_length": 40.0,
    "completions/clipped_ratio": 0.25,
    "completions/mean_terminated_length": 28.0,
    "rewards/format_reward/mean": 0.75,
    "rewards/format_reward/std": 0.43,
    "rewards/accuracy_reward/mean": 0.5,
    "rewards/accuracy_reward/std": 0.5,
    "reward": 1.25,
    "reward_std": 0.6,
    "frac_reward_zero_std": 0.5,
    "kl": 0.002,
    "entropy": 3.1,
    "clip_ratio/region_mean": 0.0,
    "epoch": 0.1,
}
ALLOWED_LABELS = {"arm", "reward", "outcome", "le"}


def sample(name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_trl_log_records_feed_the_training_gauges():
    rec = metrics.TrainingRecorder("unit-arm")
    rec.begin(max_steps=100)
    rec.step(global_step=1, samples=16)
    rec.log(TRL_RECORD)
    assert sample("medrl_train_reward", arm="unit-arm") == 1.25
    assert sample("medrl_train_reward_function", arm="unit-arm", reward="accuracy_reward") == 0.5
    assert sample("medrl_train_reward_function_std", arm="unit-arm", reward="format_reward") == 0.43
    assert sample("medrl_train_reward_std", arm="unit-arm") == 0.6
    assert sample("medrl_train_zero_std_group_ratio", arm="unit-arm") == 0.5
    assert sample("medrl_train_kl", arm="unit-arm") == 0.002
    assert sample("medrl_train_entropy_nats", arm="unit-arm") == 3.1
    assert sample("medrl_train_completion_length_mean_tokens", arm="unit-arm") == 31.5
    assert sample("medrl_train_completion_length_max_tokens", arm="unit-arm") == 40.0
    assert sample("medrl_train_completion_clipped_ratio", arm="unit-arm") == 0.25
    assert sample("medrl_train_learning_rate", arm="unit-arm") == 5e-05
    assert sample("medrl_train_steps_total", arm="unit-arm") == 1.0
    assert sample("medrl_train_samples_total", arm="unit-arm") == 16.0
    assert sample("medrl_train_global_step", arm="unit-arm") == 1.0
    assert sample("medrl_train_running", arm="unit-arm") == 1.0
    assert sample("medrl_train_step_seconds", arm="unit-arm") >= 0.0
    assert sample("medrl_train_last_step_timestamp_seconds", arm="unit-arm") > 1.7e9

    rec.log({"num_tokens": 12000.0 + 5000.0, "reward": None, "kl": float("nan")})  # None/NaN leave gauges be
    assert sample("medrl_train_tokens_per_second", arm="unit-arm") > 0
    assert sample("medrl_train_reward", arm="unit-arm") == 1.25 and sample("medrl_train_kl", arm="unit-arm") == 0.002
    rec.end()
    assert sample("medrl_train_running", arm="unit-arm") == 0.0


def test_names_units_and_labels_follow_the_rules():
    metrics.TrainingRecorder("names").log(TRL_RECORD)
    judge_metrics.judge_request("ok", 0.2)
    families = list(text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()))
    assert len(families) > 25
    for family in families:
        assert family.name.startswith("medrl_"), family.name
        for s in family.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (s.name, s.labels)
            if family.type == "counter":
                assert s.name.endswith("_total"), s.name
            else:
                assert not s.name.endswith("_total"), s.name


def test_reward_names_outside_the_label_alphabet_become_other():
    rec = metrics.TrainingRecorder("labels")
    rec.log({"rewards/what is in /img/patient 7.png?/mean": 1.0, "rewards/weird name!/mean": 0.3})
    assert sample("medrl_train_reward_function", arm="labels", reward="other") == 0.3
    assert metrics.safe_label("accuracy_reward") == "accuracy_reward"
    assert metrics.TrainingRecorder("a b").arm == "other"


def test_judge_metrics():
    hits = sample("medrl_judge_cache_hits_total")
    unscorable = sample("medrl_judge_verdicts_total", outcome="unscorable")
    other = sample("medrl_judge_requests_total", outcome="other")
    judge_metrics.judge_request("made-up outcome", 1.0)
    assert sample("medrl_judge_requests_total", outcome="other") == other + 1
    judge_metrics.judge_cache(hit=True, n=3)
    assert sample("medrl_judge_cache_hits_total") == hits + 3
    judge_metrics.judge_verdicts(scored=6, unscorable=2)
    assert sample("medrl_judge_unscorable_ratio") == 0.25
    assert sample("medrl_judge_verdicts_total", outcome="unscorable") == unscorable + 2
    assert sample("medrl_judge_request_duration_seconds_count") >= 1


def outcome_names_in(source: str) -> set[str]:
    """Every string the code ends a judge call with: the first item of a tuple it returns or stores
    (`return "timeout", None, None`), a value given to `outcome`/`last`, or one `outcome` is compared with."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple) and node.elts:
            names.add(node.elts[0])
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in ("outcome", "last") for t in node.targets
        ):
            names.add(node.value)
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "outcome":
            for right in node.comparators:
                names.update(right.elts if isinstance(right, ast.Tuple) else [right])
    return {n.value for n in names if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_every_outcome_of_the_openai_judge_is_a_metric_label():
    produced = outcome_names_in(inspect.getsource(openai))
    # the scan must see the outcomes the backend really returns, or the check below proves nothing
    assert {"ok", "unparsable", "timeout", "connection_error", "guided_rejected", "breaker_open"} <= produced
    assert produced <= set(judge_metrics.JUDGE_OUTCOMES) - {"other"}
    judge = openai.OpenAIJudge(OpenAIJudgeConfig(url="http://127.0.0.1:9", model="m"))
    assert set(judge.stats()["outcomes"]) <= set(judge_metrics.JUDGE_OUTCOMES) - {"other"}
    for outcome in produced:
        before = sample("medrl_judge_requests_total", outcome=outcome)
        judge_metrics.judge_request(outcome, 0.1)
        assert sample("medrl_judge_requests_total", outcome=outcome) == before + 1, outcome


def test_no_pushgateway_no_push(monkeypatch):
    monkeypatch.delenv(push_metrics.PUSHGATEWAY_ENV, raising=False)
    with push_metrics.batch_stage("prep", "run-1") as pushed:
        pushed.prep({"rows": 10, "train": 8, "test": 2, "quarantined": 0})
    assert not push_metrics.push("prep", pushed.registry, "run-1")
    assert push_metrics.delete_run("run-1", ["a"]) == 0


def test_a_dead_pushgateway_never_fails_the_stage(monkeypatch, caplog):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    monkeypatch.setenv(push_metrics.PUSHGATEWAY_ENV, f"http://127.0.0.1:{port}")
    with (
        caplog.at_level(logging.WARNING, logger="medrl.metrics"),
        push_metrics.batch_stage("report", "run-2") as pushed,
    ):
        pushed.set("report_arms", 3, "Arms in the report.")
    assert any("not pushed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="lowercase"):
        pushed.set("Bad-Name", 1, "x")


def test_serving_and_port_errors(monkeypatch):
    monkeypatch.setenv(metrics.PORT_ENV, "nine")
    with pytest.raises(metrics.MetricsError, match="--metrics-port"):
        metrics.port_from_env()
    monkeypatch.setenv(metrics.PORT_ENV, "9400")
    assert metrics.port_from_env() == 9400

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(metrics.MetricsError, match=r"--metrics-port \d+: cannot listen.*choose a free port"):
            metrics.serve(busy.getsockname()[1], "127.0.0.1")
    finally:
        busy.close()

    port = metrics.serve(0, "127.0.0.1")
    try:
        metrics.TrainingRecorder("served").log({"reward": 0.75})
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'medrl_train_reward{arm="served"} 0.75' in text
        assert metrics.serve(0) == port  # once per process
    finally:
        metrics.stop_serving()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_node_serves_its_own_progress_and_only_world_rank_0_counts(monkeypatch):
    """The PodMonitor scrapes every training pod: each node's local rank 0 serves; counters stay on world rank 0."""
    from types import SimpleNamespace

    from transformers import TrainerState

    from medrl.train.callbacks import PrometheusExporter

    monkeypatch.setenv(metrics.ADDR_ENV, "127.0.0.1")
    args = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=1, world_size=4)
    node1_local1 = TrainerState(global_step=0, max_steps=10, is_local_process_zero=False, is_world_process_zero=False)
    quiet_port = _free_port()
    PrometheusExporter("node-arm", quiet_port).on_train_begin(args, node1_local1, None)
    with pytest.raises(OSError):  # a second rank of a node serves nothing (its pod's port is its local rank 0's)
        urllib.request.urlopen(f"http://127.0.0.1:{quiet_port}/metrics", timeout=2)

    node1_local0 = TrainerState(global_step=0, max_steps=10, is_local_process_zero=True, is_world_process_zero=False)
    exporter = PrometheusExporter("node-arm", _free_port())
    try:
        exporter.on_train_begin(args, node1_local0, None)
        node1_local0.global_step = 3
        exporter.on_step_end(args, node1_local0, None)
        exporter.on_log(args, node1_local0, None, logs={"reward": 0.5})
        text = urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).read().decode()
        assert 'medrl_train_global_step{arm="node-arm"} 3.0' in text
        assert 'medrl_train_running{arm="node-arm"} 1.0' in text
        assert sample("medrl_train_steps_total", arm="node-arm") in (None, 0.0)  # counted once, on world rank 0
        assert sample("medrl_train_reward", arm="node-arm") is None
        rank0 = TrainerState(global_step=4, max_steps=10, is_local_process_zero=True, is_world_process_zero=True)
        exporter.on_step_end(args, rank0, None)
        assert sample("medrl_train_steps_total", arm="node-arm") == 1.0
        assert sample("medrl_train_samples_total", arm="node-arm") == 8.0
    finally:
        metrics.stop_serving()


class _CountingCollector:
    """Counts how often a scrape walks the registry (each walk renders every collector of it)."""

    def __init__(self):
        self.walks = 0

    def collect(self):
        self.walks += 1
        return []


def test_scrapes_between_steps_do_not_walk_the_registry(monkeypatch):
    """/metrics scraped 20 times a second used to render the whole registry per scrape, under the GIL the training
    loop needs; now the registry is walked once per recorded step (or per RENDER_INTERVAL), however often scraped."""
    now = [1000.0]
    monkeypatch.setattr(metrics.EXPOSITION, "clock", lambda: now[0])  # frozen: no walk is due to time passing
    walks = _CountingCollector()
    metrics.REGISTRY.register(walks)
    port = metrics.serve(0, "127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        recorder = metrics.TrainingRecorder("scraped-arm")
        recorder.begin(max_steps=10)
        bodies = {urllib.request.urlopen(url, timeout=5).read() for _ in range(20)}
        assert walks.walks == 1 and len(bodies) == 1

        recorder.step(global_step=1, samples=8)  # a step's values are served at the next scrape, walked once
        texts = {urllib.request.urlopen(url, timeout=5).read().decode() for _ in range(10)}
        assert walks.walks == 2 and len(texts) == 1
        assert 'medrl_train_global_step{arm="scraped-arm"} 1.0' in texts.pop()

        gzipped = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(gzipped, timeout=5) as reply:
            assert reply.headers["Content-Encoding"] == "gzip"
            assert b"medrl_train_global_step" in gzip.decompress(reply.read())
        assert walks.walks == 2  # the compressed body is the same rendering

        now[0] += metrics.RENDER_INTERVAL  # process and judge metrics change without a step: rendered again
        urllib.request.urlopen(url, timeout=5).read()
        assert walks.walks == 3
    finally:
        metrics.stop_serving()
        metrics.REGISTRY.unregister(walks)


def test_the_trainer_never_waits_for_a_scrape():
    """Recording a step only flags the served body as stale: it takes no lock that a rendering scrape holds."""
    import threading

    recorder = metrics.TrainingRecorder("blocked-arm")
    with metrics.EXPOSITION._lock:  # a scrape in the middle of rendering
        trainer = threading.Thread(target=lambda: (recorder.step(1, 2), recorder.log({"reward": 0.5})), daemon=True)
        trainer.start()
        trainer.join(timeout=30)  # a deadlock guard, not a speed goal
        assert not trainer.is_alive()


def test_runs_and_arms_with_long_names_keep_pushgateway_groups_of_their_own(monkeypatch, pushgateway):
    """Run ids and arm names may be 128 characters (store.layout.NAME): two that share their first 64 must not
    share a grouping key, or one run's evaluation overwrites the other's on the Pushgateway (real Pushgateway)."""
    monkeypatch.setenv(push_metrics.PUSHGATEWAY_ENV, pushgateway.url)
    stem = "study-" + "x" * 60
    for run_id, arm, accuracy in ((stem + "-seed0", "grpo", 0.25), (stem + "-seed1", "grpo", 0.75)):
        with push_metrics.batch_stage("evaluate", run_id, arm) as pushed:
            pushed.evaluation({"accuracy": {"mean": accuracy}}, questions=4)
    with urllib.request.urlopen(f"{pushgateway.url}/api/v1/metrics", timeout=10) as reply:
        groups = json.loads(reply.read())["data"]
    runs = sorted(g["labels"]["run_id"] for g in groups if g["labels"]["job"] == "medrl_evaluate")
    assert runs == [stem + "-seed0", stem + "-seed1"]
    assert push_metrics.delete_run(stem + "-seed0", ["grpo"]) == 4
    with urllib.request.urlopen(f"{pushgateway.url}/api/v1/metrics", timeout=10) as reply:
        left = [g["labels"]["run_id"] for g in json.loads(reply.read())["data"]]
    assert left == [stem + "-seed1"]  # deleting one run's groups leaves the other's
