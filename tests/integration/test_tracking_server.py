"""MLflow tracking of a tiny study against a real MLflow tracking server on loopback, read back with MLflow's own
client: the parent and child runs, their params, tags, metric histories and artifacts; a resumed run continuing the
same runs; a recurring run landing in the same experiment; no marker of the data anywhere but the report; an
unreachable server at the start; a server killed mid-run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from medrl import store, study, tracking
from medrl.store.layout import RunLayout
from medrl.study import arm as arm_steps
from tests.support.cli import medrl_here
from tests.support.tiny_runs import MARKERS, PATH_MARK, PATIENT_MARK, QUESTION_MARK, canary_dataset

pytestmark = pytest.mark.slow

STEPS = 3
STUDY = f"""
name: tiny-tracked
experiment: tiny-tracked
model: {{base: "tiny:qwen2-vl", min_pixels: 3136, max_pixels: 3136}}
data: {{source: synthetic, train_size: 32, test_size: 8, seed: 0}}
train: {{seed: 0, per_device_batch_size: 2, grad_accum: 1, max_completion_length: 16, logging_steps: 1,
        save_steps: 2}}
evaluate: {{batch_size: 8, max_new_tokens: 16}}
arms:
  base: {{method: none}}
  grpo: {{method: grpo, learning_rate: 5.0e-5, max_steps: {STEPS}, num_generations: 4, beta: 0.04}}
"""


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    monkeypatch.setattr(tracking, "BACKOFF_S", 0.2)  # the same 3 attempts, sooner
    monkeypatch.delenv(tracking.URI_ENV, raising=False)


def run_steps(run_uri: str, root: Path) -> RunLayout:
    """init done: the canary dataset as the run's data, then every arm trained and evaluated, then the report."""
    run = RunLayout(run_uri)
    store.commit_from(canary_dataset(root / "canary"), run.data)
    for arm in ("base", "grpo"):
        arm_steps.train_in_run(run_uri, arm)
        arm_steps.evaluate_in_run(run_uri, arm)
    study.report(run_uri)
    return run


def runs_of(client, experiment_id: str, run_id: str) -> dict:
    found = client.search_runs([experiment_id], f"tags.`medrl.run_id` = '{run_id}'")
    return {(r.data.tags.get("medrl.arm") or "study"): r for r in found}


@pytest.fixture(scope="module")
def tracked_study(mlflow_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    after_training: list = []  # what the train step sent from the training log once training was over
    trained = tracking.StudyTracking.trained

    def watched(self, arm, model_uri):
        log_metrics = self.log_metrics
        self.log_metrics = lambda run_id, values, *a: (after_training.extend(values), log_metrics(run_id, values, *a))
        trained(self, arm, model_uri)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking, "BACKOFF_S", 0.2)
        mp.setattr(tracking.StudyTracking, "trained", watched)
        uri = f"tracking.mlflow_uri={mlflow_server.uri}"
        run_uri = study.init_run(config_text=STUDY, overrides=[uri], store_uri=str(root / "store"), run_id="week-1")
        run = run_steps(run_uri, root)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("tiny-tracked")
    return {"run": run, "client": client, "experiment": experiment.experiment_id, "root": root,
            "after_training": after_training}  # fmt: skip


def test_study_is_a_parent_run_and_each_arm_a_child(tracked_study):
    client, run = tracked_study["client"], tracked_study["run"]
    runs = runs_of(client, tracked_study["experiment"], "week-1")
    assert set(runs) == {"study", "base", "grpo"}
    parent = runs["study"]
    assert parent.info.run_name == "week-1" and parent.info.status == "FINISHED"
    assert parent.data.tags["medrl.store_uri"] == run.uri
    assert parent.data.params["data.source"] == "synthetic" and parent.data.params["arms"] == "base,grpo"
    for arm in ("base", "grpo"):
        child = runs[arm]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.run_name == arm and child.info.status == "FINISHED"
        assert child.data.tags["medrl.run_id"] == "week-1" and child.data.tags["medrl.seed"] == "0"
        stored = json.loads(store.read_text(run.arm(arm).metrics))["metrics"]
        assert child.data.metrics["accuracy"] == pytest.approx(stored["accuracy"]["mean"])
    grpo = runs["grpo"]
    assert grpo.data.tags["medrl.method"] == "grpo"
    assert grpo.data.tags["medrl.model_uri"] == run.arm("grpo").model  # a link to the store, not the weights
    assert runs["base"].data.tags["medrl.model_uri"].endswith("base-model")
    assert grpo.data.params["learning_rate"] == "5e-05" and grpo.data.params["max_steps"] == str(STEPS)
    assert grpo.data.params["num_generations"] == "4" and "prompt" not in grpo.data.params


def test_training_metrics_are_per_step_histories(tracked_study):
    client, run = tracked_study["client"], tracked_study["run"]
    grpo = runs_of(client, tracked_study["experiment"], "week-1")["grpo"]
    log = [json.loads(line) for line in store.read_text(run.arm("grpo").train_log).splitlines()]
    rewards = sorted({k for row in log for k in row if k.startswith("rewards/") and k.endswith("/mean")})
    assert rewards  # one per reward function
    for key in ("loss", "learning_rate", "kl", "completions/mean_length", *rewards):
        history = client.get_metric_history(grpo.info.run_id, f"train/{key}")
        assert [m.step for m in history] == list(range(1, STEPS + 1)), key
        assert [m.value for m in history] == pytest.approx([row[key] for row in log if key in row]), key


def test_training_metrics_go_while_it_trains(tracked_study):
    """The live log sent every step during training: the train step found nothing left to send afterwards."""
    assert tracked_study["after_training"] == []
    grpo = runs_of(tracked_study["client"], tracked_study["experiment"], "week-1")["grpo"]
    assert grpo.data.tags["medrl.train_logged_step"] == str(STEPS)


def test_what_the_live_log_missed_goes_from_the_training_log(mlflow_server, tmp_path):
    """An arm whose run holds steps 1-2 (the live log's, before the server failed) gets 3-5 from train_log.jsonl
    after training, and a second try sends nothing twice."""
    overrides = [f"tracking.mlflow_uri={mlflow_server.uri}", "model.base=org/unbuilt"]
    run = RunLayout(study.init_run(config_text=STUDY, overrides=overrides, store_uri=str(tmp_path), run_id="gap"))
    cfg = study.load_run(run.uri)[1]
    rows = [{"step": s, "loss": 1.0 / s, "learning_rate": 1e-5} for s in range(1, 6)]
    store.write_text(run.arm("grpo").train_log, "".join(json.dumps(r) + "\n" for r in rows))
    runs = tracking.StudyTracking(cfg, run, "train-grpo")
    child = runs.arm_run("grpo")
    runs.log_metrics(child, tracking.train_metrics(rows[:2], -1), runs.sent_up_to(child))
    for _ in range(2):
        tracking.StudyTracking(cfg, run, "train-grpo").trained("grpo", run.arm("grpo").model)
    history = runs.client.get_metric_history(child, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]
    assert runs.client.get_run(child).data.tags["medrl.model_uri"] == run.arm("grpo").model


def test_report_and_config_are_artifacts_and_no_weights(tracked_study, tmp_path):
    client = tracked_study["client"]
    runs = runs_of(client, tracked_study["experiment"], "week-1")
    parent = runs["study"].info.run_id
    names = {f.path for folder in ("config", "report", "data") for f in client.list_artifacts(parent, folder)}
    assert names == {"config/config.yaml", "report/report.md", "report/report.html", "report/summary.json",
                     "data/summary.json"}  # fmt: skip
    local = Path(client.download_artifacts(parent, "report/report.md", str(tmp_path)))
    assert local.read_text() == store.read_text(store.join(tracked_study["run"].report, "report.md"))
    child = runs["grpo"].info.run_id
    assert [f.path for f in client.list_artifacts(child, "train")] == ["train/train_summary.json"]
    assert [f.path for f in client.list_artifacts(child)] == ["train"]  # no model folder, no safetensors
    assert client.get_metric_history(parent, "grpo_accuracy")


def test_no_marker_of_the_data_reaches_mlflow(tracked_study, tmp_path):
    """Every param, tag, metric name and artifact (but the report) of every run, searched for the data's markers."""
    client, run = tracked_study["client"], tracked_study["run"]
    records = (store.open_dir(run.data) / "train.jsonl").read_text()
    assert QUESTION_MARK in records  # the markers are in play
    seen: list[str] = []
    for found in runs_of(client, tracked_study["experiment"], "week-1").values():
        seen += [f"{k}={v}" for k, v in {**found.data.params, **found.data.tags}.items()]
        seen += list(found.data.metrics)
        todo = [""]
        while todo:
            for info in client.list_artifacts(found.info.run_id, todo.pop() or None):
                if info.is_dir:
                    todo.append(info.path)
                    continue
                seen.append(info.path)
                if info.path in ("report/report.md", "report/report.html"):
                    continue
                got = client.download_artifacts(found.info.run_id, info.path, str(tmp_path))
                seen.append(Path(got).read_text(encoding="utf-8", errors="replace"))
    text = "\n".join(seen)
    assert "train/loss" in text and "config/config.yaml" in text  # what was searched
    for marker in MARKERS:
        assert marker not in text


def test_the_config_artifact_holds_no_instruction_and_no_data_path(mlflow_server, tmp_path):
    """config.yaml goes to MLflow without what params leave out: the instructions (which may quote data) and the
    data's paths (which may name patients); the store keeps the whole config."""
    prompt = f"Answer {QUESTION_MARK} in <answer> </answer> tags."
    overrides = [
        f"tracking.mlflow_uri={mlflow_server.uri}",
        f"prompt={prompt}",
        f"data.input=/site/{PATH_MARK}/vqa",
        f"arms.grpo.prompt=Think about {PATIENT_MARK}.",
    ]
    run_uri = study.init_run(config_text=STUDY, overrides=overrides, store_uri=str(tmp_path / "store"), run_id="cfg")
    assert all(m in store.read_text(RunLayout(run_uri).config) for m in MARKERS)  # the markers are in play
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("tiny-tracked").experiment_id
    parent = runs_of(client, experiment, "cfg")["study"].info.run_id
    sent = Path(client.download_artifacts(parent, "config/config.yaml", str(tmp_path))).read_text()
    assert yaml.safe_load(sent)["arms"]["grpo"]["max_steps"] == STEPS  # the settings are there
    for marker in MARKERS:
        assert marker not in sent


def test_resumed_and_recurring_runs(tracked_study, mlflow_server, monkeypatch):
    """Every step run again on the same run id continues the same MLflow runs and sends nothing twice; a new run
    of the study (server from MLFLOW_TRACKING_URI) is a new parent run in the same experiment."""
    client, run, root = tracked_study["client"], tracked_study["run"], tracked_study["root"]
    before = runs_of(client, tracked_study["experiment"], "week-1")
    uri = f"tracking.mlflow_uri={mlflow_server.uri}"
    assert study.init_run(config_text=STUDY, overrides=[uri], store_uri=str(root / "store"), run_id="week-1") == run.uri
    for arm in ("base", "grpo"):
        arm_steps.train_in_run(run.uri, arm)
        arm_steps.evaluate_in_run(run.uri, arm)
    study.report(run.uri)
    after = runs_of(client, tracked_study["experiment"], "week-1")
    assert {k: r.info.run_id for k, r in after.items()} == {k: r.info.run_id for k, r in before.items()}
    assert len(client.get_metric_history(after["grpo"].info.run_id, "train/loss")) == STEPS
    assert len(client.get_metric_history(after["grpo"].info.run_id, "accuracy")) == 1
    assert len(client.get_metric_history(after["study"].info.run_id, "grpo_accuracy")) == 1

    monkeypatch.setenv(tracking.URI_ENV, mlflow_server.uri)
    week2 = study.init_run(config_text=STUDY, store_uri=str(root / "store"), run_id="week-2")
    assert yaml.safe_load(store.read_text(RunLayout(week2).config))["tracking"]["mlflow_uri"] == mlflow_server.uri
    assert set(runs_of(client, tracked_study["experiment"], "week-2")) == {"study"}


def test_unreachable_server_at_start(tmp_path, caplog):
    from tests.support.servers import free_ports

    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    with pytest.raises(tracking.TrackingError, match=r"tracking.mlflow_uri .* tracking.required=false"):
        study.init_run(
            config_text=STUDY, overrides=[f"tracking.mlflow_uri={dead}"], store_uri=str(tmp_path), run_id="a"
        )
    assert not store.exists(RunLayout.create(store.normalize(str(tmp_path)), "tiny-tracked", "a").config)
    # `medrl run` says so before any task starts: exit 2, the setting and the fix, no traceback, nothing written.
    # In this process (tests/support/cli.py): a new interpreter would import torch only to print the refusal.
    done = medrl_here("run", "--preset", "demo", "--store", str(tmp_path / "cli"), f"tracking.mlflow_uri={dead}")
    assert done.returncode == 2, done.stderr
    said = f"error: tracking.mlflow_uri {dead}: the MLflow server does not answer (ConnectionRefusedError"
    assert said in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "cli").exists()

    caplog.set_level(logging.WARNING, logger="medrl")
    overrides = [f"tracking.mlflow_uri={dead}", "tracking.required=false"]
    run_uri = study.init_run(config_text=STUDY, overrides=overrides, store_uri=str(tmp_path), run_id="b")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "untracked" in r.getMessage()]
    assert len(warnings) == 1
    assert yaml.safe_load(store.read_text(RunLayout(run_uri).config))["tracking"]["mlflow_uri"] == "off"
    assert tracking.incomplete_notes(RunLayout(run_uri)) == [
        f"the MLflow server {dead} did not answer at the start; the run is not tracked"
    ]


def test_server_killed_mid_run_never_stops_training(own_mlflow_server, tmp_path):
    uri = f"tracking.mlflow_uri={own_mlflow_server.uri}"
    run_uri = study.init_run(config_text=STUDY, overrides=[uri], store_uri=str(tmp_path / "store"), run_id="x")
    own_mlflow_server.kill()
    run = run_steps(run_uri, tmp_path)
    assert store.is_committed(run.arm("grpo").model)
    assert json.loads(store.read_text(run.arm("grpo").metrics))["metrics"]["accuracy"]["mean"] is not None
    report = store.read_text(store.join(run.report, "report.md"))
    assert "MLflow tracking of this run is incomplete" in report
    assert "train-grpo: " in report and "evaluate-grpo: " in report
