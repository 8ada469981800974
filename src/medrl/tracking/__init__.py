"""MLflow tracking of a study: the study is a parent MLflow run, each arm a child run with its settings as params,
its training log as per-step metrics, its evaluation metrics under the report's names; the report and the config
(less its instructions and data paths) as artifacts, the model as a tag naming its store URI (never the weights).

Each step of a study (init, train, evaluate, report) runs in a process of its own, so runs are found again by their
tags (`medrl.run_id`, `medrl.arm`), which is also how a resumed run continues the same MLflow runs. Every call is
retried within a bounded budget; once one call has spent it, the server counts as down for the rest of that process
and what is left is skipped, noted under `<run>/tracking/` and named in the report: tracking never stops training.
Only numbers, settings and the report are sent: no record field (question, answer, image path, meta) and no
instruction text.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from medrl import store
from medrl.config import ConfigError, StudyConfig
from medrl.errors import MedrlError
from medrl.store.layout import RunLayout

log = logging.getLogger("medrl")

URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable; the site's default server (k8s: the medrl-store ConfigMap)
# The site's MLflow credentials, an optional Secret in the cluster, reach every pod as MLflow's own variables.
CREDENTIALS_SECRET = "medrl-mlflow"
CREDENTIALS_KEYS = {
    "token": "MLFLOW_TRACKING_TOKEN",
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
}
TAG_RUN = "medrl.run_id"
TAG_ROLE = "medrl.role"  # study | arm
TAG_ARM = "medrl.arm"
TAG_METHOD = "medrl.method"
TAG_SEED = "medrl.seed"
TAG_STORE = "medrl.store_uri"
TAG_MODEL = "medrl.model_uri"
TAG_LOGGED_STEP = "medrl.train_logged_step"  # the last training step sent: a retried step sends only what follows
TAG_INCOMPLETE = "medrl.tracking_incomplete"
ATTEMPTS = 3  # per call; with BACKOFF_S, a dead server costs a process about 6 s plus the request timeouts
BACKOFF_S = 2.0
# MLflow's own HTTP retries (7, backoff factor 2: minutes per call) would multiply ours; a site may still set them.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
# Free text and site data paths stay out of params: instructions may quote data, paths may name patients.
UNLOGGED_SETTINGS = {"prompt", "input", "images", "cache_dir"}
# MLflow's alphabet for metric names (':' off Windows): TRL names a user's reward `rewards/module:function/mean`.
METRIC_NAME = re.compile(r"[A-Za-z0-9_./ :-]{1,250}")
BATCH = 500  # metrics per log_batch call (MLflow accepts up to 1000)


class TrackingError(MedrlError):
    """The tracking server does not answer at the start of a run and `tracking.required` is true."""


def requested_uri(cfg: StudyConfig) -> str | None:
    """The server a new run should log to: tracking.mlflow_uri, else MLFLOW_TRACKING_URI; None when off."""
    uri = cfg.tracking.mlflow_uri
    if uri is None:
        uri = os.environ.get(URI_ENV, "").strip() or None
    return None if uri in (None, "off") else uri


def frozen_uri(cfg: StudyConfig) -> str | None:
    """The server a run's later steps log to: only what init froze into its config (the environment of a pod
    that trains or evaluates does not change it)."""
    uri = cfg.tracking.mlflow_uri
    return None if uri in (None, "off") else uri


class Tracker:
    """One process's MLflow client. `call` retries within a bounded budget; after one call has spent it the server
    counts as down here, and later calls are skipped and counted in `lost` instead of each waiting again."""

    def __init__(self, uri: str, attempts: int | None = None, backoff: float | None = None):
        for key, value in CLIENT_ENV.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the site for MLflow's makers
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.attempts = ATTEMPTS if attempts is None else attempts
        self.backoff = BACKOFF_S if backoff is None else backoff
        self.down: str | None = None
        self.lost = 0

    def _retried(self, fn: Callable, *args, **kwargs) -> tuple[bool, Any]:
        error: Exception | None = None
        for attempt in range(self.attempts):
            try:
                return True, fn(*args, **kwargs)
            except Exception as err:  # MlflowException, requests' connection errors: the server's, not ours
                error = err
                if attempt + 1 < self.attempts:
                    time.sleep(self.backoff * 2**attempt)
        return False, reason(error)

    def call(self, what: str, fn: Callable, *args, **kwargs) -> Any:
        if self.down:
            self.lost += 1
            return None
        ok, result = self._retried(fn, *args, **kwargs)
        if ok:
            return result
        self.down = f"{what}: {result}"
        self.lost += 1
        log.warning("tracking: %s failed %d times (%s); the run goes on, untracked from here", what,
                    self.attempts, self.down)  # fmt: skip
        return None

    def reachable(self) -> str | None:
        """None if the server answers, else what went wrong (the caller says what it means for the run)."""
        ok, result = self._retried(self.client.search_experiments, max_results=1)
        if not ok:
            self.down = result
        return self.down


def reason(error: BaseException | None) -> str:
    """The root of an MLflow client error (`ConnectionRefusedError: ...` rather than three wrappers' messages).

    >>> try:
    ...     try:
    ...         raise ConnectionRefusedError("[Errno 111] Connection refused")
    ...     except OSError as err:
    ...         raise RuntimeError("API request failed") from err
    ... except RuntimeError as err:
    ...     reason(err)
    'ConnectionRefusedError: [Errno 111] Connection refused'
    """
    for _ in range(10):
        inner = (error.__cause__ or error.__context__) if error else None
        if inner is None:
            break
        error = inner
    return f"{type(error).__name__}: {str(error)[:200]}"


def check_at_start(cfg: StudyConfig) -> None:
    """Before a local study starts any task: an unreachable server with `tracking.required` is a clear error now."""
    uri = requested_uri(cfg)
    if uri is None:
        return
    problem = Tracker(uri).reachable()
    if problem and cfg.tracking.required:
        raise TrackingError(_unreachable(uri, problem))
    if problem:  # the init task says it again, in its own log
        log.warning("tracking: the MLflow server %s does not answer; this run goes on untracked", uri)


def _unreachable(uri: str, problem: str) -> str:
    return (
        f"tracking.mlflow_uri {uri}: the MLflow server does not answer ({problem}); start it or fix the URI "
        f"(or {URI_ENV}), or set tracking.required=false to run untracked"
    )


def resolve(cfg: StudyConfig, run: RunLayout) -> StudyConfig:
    """At init: freeze the server into the config (from MLFLOW_TRACKING_URI when the config names none) and check
    it answers. Unreachable: TrackingError, or with `tracking.required: false` one warning and tracking off for
    the whole run (noted for the report)."""
    uri = requested_uri(cfg)
    if uri is None:
        return cfg
    if cfg.tracking.mlflow_uri is None:
        try:
            cfg.tracking.mlflow_uri = uri
        except ValueError:
            raise ConfigError(f"{URI_ENV}={uri!r}: give the tracking server as http(s)://host:port") from None
    problem = Tracker(uri).reachable()
    if problem:
        if cfg.tracking.required:
            raise TrackingError(_unreachable(uri, problem))
        log.warning("tracking: the MLflow server %s does not answer; this run goes on untracked", uri)
        cfg.tracking.mlflow_uri = "off"
        note(run, "init", f"the MLflow server {uri} did not answer at the start; the run is not tracked")
    return cfg


def note(run: RunLayout, stage: str, text: str) -> None:
    """Record that tracking missed something, for the report (one file per stage, so parallel arms never race)."""
    store.write_text(store.join(run.uri, "tracking", f"{stage}.json"), json.dumps({"stage": stage, "note": text}))


def incomplete_notes(run: RunLayout) -> list[str]:
    """What tracking missed in this run, one line per stage that noted it."""
    folder = store.join(run.uri, "tracking")
    lines = []
    for name in sorted(store.list_dir(folder)):
        if name.endswith(".json"):
            lines.append(json.loads(store.read_text(store.join(folder, name)))["note"])
    return lines


def flat_params(settings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as `a.b` -> text; lists as JSON; free text and data paths left out.

    >>> flat_params({"lr": 1e-5, "prompt": "x", "rewards": [{"name": "format"}], "data": {"input": "/d"}})
    {'lr': '1e-05', 'rewards': '[{"name": "format"}]'}
    """
    out: dict[str, str] = {}
    for key, value in settings.items():
        if key in UNLOGGED_SETTINGS:
            continue
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return out


def without_unlogged(settings: Any) -> Any:
    """`settings` with every UNLOGGED_SETTINGS key left out, at any depth.

    >>> without_unlogged({"prompt": "x", "arms": {"a": {"prompt": "y", "lr": 1}}, "data": {"input": "/d"}})
    {'arms': {'a': {'lr': 1}}, 'data': {}}
    """
    if isinstance(settings, dict):
        return {k: without_unlogged(v) for k, v in settings.items() if k not in UNLOGGED_SETTINGS}
    if isinstance(settings, list):
        return [without_unlogged(v) for v in settings]
    return settings


def eval_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json's `metrics` as MLflow metrics under the report's names: `<metric>` (mean), `<metric>_std`."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(value, dict) or not METRIC_NAME.fullmatch(key):
            continue
        for field, suffix in (("mean", ""), ("std", "_std")):
            number = value.get(field)
            if isinstance(number, int | float) and not isinstance(number, bool):
                out[key + suffix] = float(number)
    return out


def train_metrics(rows: Iterable[dict], after: int) -> list[tuple[str, float, int]]:
    """The training log's numbers after step `after` as (`train/<key>`, value, step).

    >>> train_metrics([{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4, "kl": 0.01}], after=1)
    [('train/loss', 0.4, 2), ('train/kl', 0.01, 2)]
    """
    out = []
    for row in rows:
        step = int(row.get("step", 0))
        if step <= after:
            continue
        for key, value in row.items():
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if key != "step" and number and METRIC_NAME.fullmatch(f"train/{key}"):
                out.append((f"train/{key}", float(value), step))
    return out


class StudyTracking:
    """A study's MLflow runs as one step of it sees them: found by tag, created when missing."""

    def __init__(self, cfg: StudyConfig, run: RunLayout, stage: str, tracker: Tracker | None = None):
        self.cfg = cfg
        self.run = run
        self.stage = stage
        self.tracker = tracker or Tracker(frozen_uri(cfg) or "")
        self.client = self.tracker.client
        self._experiment: str | None = None

    @classmethod
    def open(cls, cfg: StudyConfig, run: RunLayout, stage: str) -> StudyTracking | None:
        """None when the run is not tracked."""
        return cls(cfg, run, stage) if frozen_uri(cfg) else None

    def experiment_id(self) -> str | None:
        if self._experiment is None:
            name = self.cfg.tracking.experiment or self.cfg.experiment
            found = self.tracker.call("finding the experiment", self.client.get_experiment_by_name, name)
            if found is not None:
                self._experiment = found.experiment_id
            elif not self.tracker.down:
                self._experiment = self.tracker.call("creating the experiment", self.client.create_experiment, name)
        return self._experiment

    def _find(self, role: str, arm: str | None = None) -> str | None:
        experiment = self.experiment_id()
        if experiment is None:
            return None
        query = f"tags.`{TAG_RUN}` = '{self.run.run_id}' and tags.`{TAG_ROLE}` = '{role}'"
        if arm:
            query += f" and tags.`{TAG_ARM}` = '{arm}'"
        found = self.tracker.call("finding the run", self.client.search_runs, [experiment], query, max_results=1)
        if not found:
            return None
        run = found[0]
        if run.info.status != "RUNNING":  # a resumed step continues it
            self.tracker.call("reopening the run", self.client.update_run, run.info.run_id, "RUNNING")
        return run.info.run_id

    def study_run(self) -> str | None:
        """The parent run (created with the study's settings as params and the config as an artifact)."""
        found = self._find("study")
        if found or self.tracker.down or self.experiment_id() is None:
            return found
        tags = {TAG_RUN: self.run.run_id, TAG_ROLE: "study", TAG_STORE: self.run.uri, "medrl.study": self.cfg.name}
        made = self.tracker.call("creating the study run", self.client.create_run, self.experiment_id(), tags=tags,
                                 run_name=self.run.run_id)  # fmt: skip
        if made is None:
            return None
        run_id = made.info.run_id
        settings = self.cfg.model_dump(mode="json", exclude={"arms", "train", "tracking"})
        params = flat_params(settings) | {"arms": ",".join(self.cfg.arms)}
        self.log_params(run_id, params)
        self.log_config(run_id)
        return run_id

    def log_config(self, run_id: str) -> None:
        """The frozen config.yaml as an artifact, less what params leave out too (UNLOGGED_SETTINGS: instructions
        may quote data, paths may name patients); the store keeps the whole file."""
        settings = without_unlogged(yaml.safe_load(store.read_text(self.run.config)))
        text = f"# {', '.join(sorted(UNLOGGED_SETTINGS))} left out; the whole file: {self.run.config}\n"
        with tempfile.TemporaryDirectory(prefix="medrl-tracking-") as tmp:
            local = Path(tmp) / "config.yaml"
            local.write_text(text + yaml.safe_dump(settings, sort_keys=False))
            self.tracker.call("logging an artifact", self.client.log_artifact, run_id, str(local), "config")

    def arm_run(self, arm: str) -> str | None:
        """The arm's child run, created with its resolved settings as params and its tags."""
        found = self._find("arm", arm)
        if found or self.tracker.down:
            return found
        parent = self.study_run()
        if parent is None:
            return None
        spec = self.cfg.arms[arm]
        tags = {
            TAG_RUN: self.run.run_id,
            TAG_ROLE: "arm",
            TAG_ARM: arm,
            TAG_METHOD: spec.method,
            TAG_SEED: str(getattr(spec, "seed", self.cfg.data.seed)),
            TAG_STORE: self.run.arm(arm).uri,
            "mlflow.parentRunId": parent,
        }
        made = self.tracker.call("creating the arm's run", self.client.create_run, self.experiment_id(), tags=tags,
                                 run_name=arm)  # fmt: skip
        if made is None:
            return None
        self.log_params(made.info.run_id, flat_params(spec.model_dump(mode="json")))
        return made.info.run_id

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.tracker.call("logging params", self.client.log_batch, run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, values: list[tuple[str, float, int]], after_each: Callable | None = None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for i in range(0, len(values), BATCH):
            chunk = values[i : i + BATCH]
            metrics = [Metric(key, value, now, step) for key, value, step in chunk]
            self.tracker.call("logging metrics", self.client.log_batch, run_id, metrics=metrics)
            if self.tracker.down:
                return
            if after_each:
                after_each(chunk[-1][2])

    def logged_step(self, run_id: str) -> int:
        """The last training step the arm's run holds (-1: none): a resumed or retried step sends what follows."""
        got = self.tracker.call("reading the run", self.client.get_run, run_id)
        return int((got.data.tags.get(TAG_LOGGED_STEP) or -1) if got else -1)

    def sent_up_to(self, run_id: str) -> Callable[[int], None]:
        return lambda step: self.set_tags(run_id, {TAG_LOGGED_STEP: str(step)})

    def unsent(self, run_id: str, values: dict[str, float]) -> list[tuple[str, float, int]]:
        """`values` as step-0 metrics, less those the run already holds (a retried step sends nothing twice)."""
        got = self.tracker.call("reading the run", self.client.get_run, run_id)
        have = got.data.metrics if got else {}
        return [(k, v, 0) for k, v in values.items() if have.get(k) != v]

    def log_file(self, run_id: str, uri: str, folder: str | None = None) -> None:
        """A store file as an artifact (under `folder`)."""
        if not store.exists(uri):
            return
        with tempfile.TemporaryDirectory(prefix="medrl-tracking-") as tmp:
            local = Path(tmp) / uri.rstrip("/").rsplit("/", 1)[-1]
            local.write_bytes(store.read_bytes(uri))
            self.tracker.call("logging an artifact", self.client.log_artifact, run_id, str(local), folder)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.tracker.call("setting a tag", self.client.set_tag, run_id, key, value)

    # ------------------------------------------------------------------ what each step logs

    def trained(self, arm: str, model_uri: str) -> None:
        """After training: what the training log holds and the run does not yet (the live log, `medrl.tracking.live`,
        sends while training; this sends what it missed), the model's store URI as a tag, train_summary.json as an
        artifact."""
        run_id = self.arm_run(arm)
        if run_id is None:
            return
        paths = self.run.arm(arm)
        rows = []
        if store.exists(paths.train_log):
            rows = [json.loads(line) for line in store.read_text(paths.train_log).splitlines() if line.strip()]
        self.log_metrics(run_id, train_metrics(rows, self.logged_step(run_id)), self.sent_up_to(run_id))
        self.set_tags(run_id, {TAG_MODEL: model_uri})
        self.log_file(run_id, store.join(model_uri, "train_summary.json"), "train")

    def evaluated(self, arm: str, metrics: dict[str, Any], model_uri: str) -> None:
        """After evaluation: the arm's metrics under the report's names; the arm's run ends."""
        run_id = self.arm_run(arm)
        if run_id is None:
            return
        self.log_metrics(run_id, self.unsent(run_id, eval_metrics(metrics)))
        self.set_tags(run_id, {TAG_MODEL: model_uri})
        if not self.tracker.down:
            self.tracker.call("ending the arm's run", self.client.set_terminated, run_id, "FINISHED")

    def reported(self, report_uri: str, numbers: dict[str, float]) -> None:
        """After the report: its files as artifacts, its headline numbers as metrics; the study's run ends."""
        run_id = self.study_run()
        if run_id is None:
            return
        self.log_metrics(run_id, self.unsent(run_id, {k: v for k, v in numbers.items() if METRIC_NAME.fullmatch(k)}))
        for name in ("report.md", "report.html", "summary.json"):
            self.log_file(run_id, store.join(report_uri, name), "report")
        self.log_file(run_id, store.join(self.run.data, "summary.json"), "data")
        missed = incomplete_notes(self.run)
        if missed:
            self.set_tags(run_id, {TAG_INCOMPLETE: "true"})
        if not self.tracker.down:
            self.tracker.call("ending the study's run", self.client.set_terminated, run_id, "FINISHED")

    def close(self) -> None:
        """Note for the report what this step could not send; a step that sent all clears its earlier note (the
        start of training, say, when the end of it reached the server again)."""
        if not self.tracker.lost:
            uri = store.join(self.run.uri, "tracking", f"{self.stage}.json")
            if store.exists(uri):
                store.delete(uri)
            return
        if self.tracker.lost:
            note(
                self.run,
                self.stage,
                f"{self.stage}: {self.tracker.lost} tracking call(s) were not sent; the MLflow server failed "
                f"({self.tracker.down})",
            )
