"""medrl.tracking without a server: where the server comes from, what settings become params, and the bounded
retry budget (the MLflow server itself: tests/integration/test_tracking_server.py)."""

from __future__ import annotations

import pytest

from medrl import tracking
from medrl.config import ConfigError, load_config
from medrl.rewards import custom_reward


def test_tracking_is_off_by_default(monkeypatch):
    monkeypatch.delenv(tracking.URI_ENV, raising=False)
    cfg = load_config(preset="demo")
    assert cfg.tracking.mlflow_uri is None and cfg.tracking.required is True
    assert tracking.requested_uri(cfg) is None


def test_the_server_comes_from_the_config_else_the_environment(monkeypatch):
    monkeypatch.setenv(tracking.URI_ENV, "http://site-mlflow:5000")
    assert tracking.requested_uri(load_config(preset="demo")) == "http://site-mlflow:5000"
    mine = load_config(preset="demo", overrides=["tracking.mlflow_uri=https://mine:443/"])
    assert tracking.requested_uri(mine) == "https://mine:443"
    off = load_config(preset="demo", overrides=["tracking.mlflow_uri=off"])
    assert tracking.requested_uri(off) is None and tracking.frozen_uri(off) is None
    # Later steps read only what init froze: the environment of a training pod does not turn tracking on.
    assert tracking.frozen_uri(load_config(preset="demo")) is None


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("mlflow.internal:5000", "http\\(s\\)://host:port"),
        ("http://user:secret@mlflow:5000", "MLFLOW_TRACKING_USERNAME"),
    ],
)
def test_a_bad_server_setting_names_the_fix(uri, message):
    with pytest.raises(ConfigError, match=message):
        load_config(preset="demo", overrides=[f"tracking.mlflow_uri={uri}"])


def test_instruction_and_data_paths_never_become_params():
    cfg = load_config(preset="demo", overrides=["data.input=/data/patient-x", "arms.sft.prompt=Think."])
    params = tracking.flat_params(cfg.model_dump(mode="json"))
    assert "data.source" in params and "arms.sft.learning_rate" in params
    assert not [k for k in params if k.rsplit(".", 1)[-1] in ("prompt", "input", "images")]
    assert "/data/patient-x" not in params.values() and "Think." not in params.values()


def test_evaluation_metrics_keep_the_reports_names():
    metrics = {"accuracy": {"mean": 0.5, "std": 0.5, "n": 8}, "similarity": {"mean": None, "status": "n/a"}}
    assert tracking.eval_metrics(metrics) == {"accuracy": 0.5, "accuracy_std": 0.5}


def test_a_custom_rewards_training_metrics_are_sent():
    """TRL logs a reward under its function's name, for a user's reward `module:function`; MLflow takes ':' in
    metric names (off Windows), so these rows must not be dropped on the way."""
    name = custom_reward("tests.support.custom_rewards:brevity").__name__
    rows = [{"step": 1, f"rewards/{name}/mean": 0.5, "loss": 0.1}]
    sent = {key for key, _, _ in tracking.train_metrics(rows, after=0)}
    assert sent == {f"train/rewards/{name}/mean", "train/loss"}


def test_a_failing_server_costs_one_retry_budget_per_process():
    tracker = tracking.Tracker("http://127.0.0.1:9", attempts=3, backoff=0)
    calls = []

    def failing():
        calls.append(1)
        raise ConnectionError("refused")

    assert tracker.call("logging metrics", failing) is None
    assert len(calls) == 3 and tracker.down and tracker.lost == 1
    assert tracker.call("logging metrics", failing) is None
    assert len(calls) == 3 and tracker.lost == 2  # skipped, not tried again


def test_a_uri_with_a_password_is_refused_without_echoing_the_password():
    with pytest.raises(ConfigError) as refused:
        load_config(preset="demo", overrides=["tracking.mlflow_uri=http://bob:s3cret@mlflow.local:5000"])
    assert "MLFLOW_TRACKING_USERNAME" in str(refused.value)
    assert "s3cret" not in str(refused.value) and "bob" not in str(refused.value)
