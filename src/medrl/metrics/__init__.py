"""Prometheus metrics: the registry, training's gauges (fed from TRL's logs) and training's /metrics; the judge's
counters are in metrics/judge.py, batch stages' Pushgateway pushes in metrics/pushgateway.py.

Names start with `medrl_`, use base units, counters end in `_total`. Labels are bounded (arm, reward,
outcome); a run id is only a Pushgateway grouping key. Nothing read from a record ever becomes a label.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, disable_created_metrics
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder, gzip_accepted

from medrl.errors import MedrlError

log = logging.getLogger("medrl.metrics")

PORT_ENV = "MEDRL_METRICS_PORT"
ADDR_ENV = "MEDRL_METRICS_ADDR"

disable_created_metrics()  # no `*_created` series: Prometheus 2 ignores them, and they double a push's size
REGISTRY = CollectorRegistry()
ProcessCollector(namespace="medrl", registry=REGISTRY)  # medrl_process_cpu_seconds_total, ..._resident_memory_bytes


class MetricsError(MedrlError, RuntimeError):
    """Metrics cannot be served; the message names the setting and the fix."""


def _arm_gauge(name: str, doc: str) -> Gauge:
    return Gauge(name, doc, ["arm"], registry=REGISTRY)


# ------------------------------------------------------------------------------------------------ training

FROM_LOGS: dict[str, Gauge] = {
    "reward": _arm_gauge("medrl_train_reward", "Mean total (weighted) reward of the last logged step's completions."),
    "reward_std": _arm_gauge("medrl_train_reward_std", "Standard deviation of the total reward within groups."),
    "frac_reward_zero_std": _arm_gauge(
        "medrl_train_zero_std_group_ratio",
        "Fraction of prompt groups whose completions all got the same reward (no learning signal).",
    ),
    "kl": _arm_gauge("medrl_train_kl", "Mean per-token KL divergence from the reference model (absent when beta=0)."),
    "entropy": _arm_gauge("medrl_train_entropy_nats", "Mean per-token entropy of the policy, in nats."),
    "completions/mean_length": _arm_gauge(
        "medrl_train_completion_length_mean_tokens", "Mean length of sampled completions, in tokens."
    ),
    "completions/max_length": _arm_gauge(
        "medrl_train_completion_length_max_tokens", "Longest sampled completion of the step, in tokens."
    ),
    "completions/clipped_ratio": _arm_gauge(
        "medrl_train_completion_clipped_ratio", "Fraction of completions cut at max_completion_length."
    ),
    "learning_rate": _arm_gauge("medrl_train_learning_rate", "Learning rate of the last optimizer step."),
    "loss": _arm_gauge("medrl_train_loss", "Training loss averaged over the last logging interval."),
    "grad_norm": _arm_gauge("medrl_train_grad_norm", "Gradient norm before clipping."),
}
REWARD_FUNCTION = Gauge(
    "medrl_train_reward_function",
    "Mean reward of one reward function (unweighted).",
    ["arm", "reward"],
    registry=REGISTRY,
)
REWARD_FUNCTION_STD = Gauge(
    "medrl_train_reward_function_std",
    "Standard deviation of one reward function.",
    ["arm", "reward"],
    registry=REGISTRY,
)
STEP_SECONDS = _arm_gauge(
    "medrl_train_step_seconds", "Wall-clock seconds of the last optimizer step, sampling included."
)
TOKENS_PER_SECOND = _arm_gauge("medrl_train_tokens_per_second", "Tokens (prompt and completion) processed per second.")
GLOBAL_STEP = _arm_gauge("medrl_train_global_step", "Optimizer steps done, counting those before a resume.")
MAX_STEPS = _arm_gauge("medrl_train_max_steps", "Optimizer steps the run will do in total.")
LAST_STEP = _arm_gauge(
    "medrl_train_last_step_timestamp_seconds", "Unix time of the last finished optimizer step (or of the start)."
)
RUNNING = _arm_gauge("medrl_train_running", "1 while the trainer runs, 0 once it has ended.")
GPU_ALLOCATED = _arm_gauge("medrl_train_gpu_memory_allocated_bytes", "GPU memory held by tensors (CUDA only).")
GPU_PEAK = _arm_gauge("medrl_train_gpu_memory_max_reserved_bytes", "Peak GPU memory reserved by the allocator (CUDA).")
STEPS = Counter("medrl_train_steps", "Optimizer steps finished by this process.", ["arm"], registry=REGISTRY)
SAMPLES = Counter(
    "medrl_train_samples",
    "Training samples processed by this process (completions for GRPO, examples for SFT).",
    ["arm"],
    registry=REGISTRY,
)

# As long as a run id or an arm name may be (store.layout.NAME): a shorter cap made two long run ids share the
# Pushgateway group 'other', where one run's evaluation replaced the other's.
_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def safe_label(value: str) -> str:
    """Label values come from code and config (arm, reward function names); anything else becomes 'other'."""
    return value if _LABEL.fullmatch(value) else "other"


class TrainingRecorder:
    """Turns trainer events and TRL's log records into the training gauges and counters of one arm."""

    def __init__(self, arm: str):
        self.arm = safe_label(arm or "default")
        self._last_step = time.monotonic()
        self._tokens: tuple[float, float] | None = None  # (time, cumulative tokens) of the previous log record

    def begin(self, max_steps: int) -> None:
        RUNNING.labels(self.arm).set(1)
        MAX_STEPS.labels(self.arm).set(max_steps)
        LAST_STEP.labels(self.arm).set_to_current_time()
        STEPS.labels(self.arm)
        SAMPLES.labels(self.arm)
        self._last_step = time.monotonic()
        self._tokens = None
        EXPOSITION.invalidate()

    def step(self, global_step: int, samples: int) -> None:
        """A step finished, as the world's rank 0 records it: progress, and the counters summed over the run."""
        self.progress(global_step)
        STEPS.labels(self.arm).inc()
        SAMPLES.labels(self.arm).inc(samples)
        EXPOSITION.invalidate()

    def progress(self, global_step: int) -> None:
        """A step finished, as any node sees it: its time, the global step and this node's GPU memory."""
        now = time.monotonic()
        STEP_SECONDS.labels(self.arm).set(now - self._last_step)
        self._last_step = now
        GLOBAL_STEP.labels(self.arm).set(global_step)
        LAST_STEP.labels(self.arm).set_to_current_time()
        self._gpu()
        EXPOSITION.invalidate()

    def log(self, logs: dict) -> None:
        for key, value in logs.items():
            if not isinstance(value, int | float) or value != value:  # skip None, text and NaN
                continue
            if key in FROM_LOGS:
                FROM_LOGS[key].labels(self.arm).set(value)
            elif key.startswith("rewards/") and key.count("/") == 2:
                _, name, stat = key.split("/")
                target = {"mean": REWARD_FUNCTION, "std": REWARD_FUNCTION_STD}.get(stat)
                if target is not None:
                    target.labels(self.arm, safe_label(name)).set(value)
            elif key == "num_tokens":
                now = time.monotonic()
                if self._tokens is not None and now > self._tokens[0] and value >= self._tokens[1]:
                    TOKENS_PER_SECOND.labels(self.arm).set((value - self._tokens[1]) / (now - self._tokens[0]))
                self._tokens = (now, float(value))
        EXPOSITION.invalidate()

    def end(self) -> None:
        RUNNING.labels(self.arm).set(0)
        EXPOSITION.invalidate()

    def _gpu(self) -> None:
        import sys

        torch = sys.modules.get("torch")  # never import torch just for this
        if torch is not None and torch.cuda.is_available():
            GPU_ALLOCATED.labels(self.arm).set(torch.cuda.memory_allocated())
            GPU_PEAK.labels(self.arm).set(torch.cuda.max_memory_reserved())


# ------------------------------------------------------------------------------------------------ serving

RENDER_INTERVAL = 1.0  # seconds; Prometheus scrapes every 15-30 s, so only a faster scraper ever sees a cached body
_now = time.monotonic


class Exposition:
    """The /metrics body of a registry, rendered again only when the trainer recorded something (`invalidate()`, at
    most once per step and log record) or when the last rendering is `interval` seconds old (process and judge
    metrics); scrapes in between are answered with the same bytes.

    Rendering walks every collector and formats every sample in Python, holding the GIL that the training loop needs
    between its torch ops (0.4-0.8 ms of CPU for medrl's registry, measured on 2 cores): rendered per scrape, that
    cost grew with the scrape rate; now it is paid at most once per step (or per `interval`), however often scraped.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        interval: float = RENDER_INTERVAL,
        clock: Callable[[], float] = _now,
    ):
        self.registry = registry
        self.interval = interval
        self.clock = clock
        self.renders = 0  # how many times the registry was walked; a test reads it
        self._lock = threading.Lock()  # scrape threads only: the trainer's invalidate() never waits on it
        self._stale = True
        self._rendered_at = 0.0
        self._bodies: dict[tuple[str, bool], bytes] = {}

    def invalidate(self) -> None:
        """New values were recorded: the next scrape renders them (a flag, so the training loop never blocks)."""
        self._stale = True

    def body(self, accept: str | None = None, accept_encoding: str | None = None) -> tuple[bytes, list]:
        """The body and headers for a scrape with these Accept and Accept-Encoding headers."""
        encoder, content_type = choose_encoder(accept or "")
        compressed = gzip_accepted(accept_encoding or "")
        with self._lock:
            now = self.clock()
            if self._stale or now - self._rendered_at >= self.interval:
                self._stale = False  # before rendering: values recorded meanwhile make the next scrape render again
                self._rendered_at = now
                self._bodies.clear()
            key = (content_type, compressed)
            if key not in self._bodies:
                raw = self._bodies.get((content_type, False))
                if raw is None:
                    raw = self._bodies[(content_type, False)] = encoder(self.registry)
                    self.renders += 1
                self._bodies[key] = gzip.compress(raw) if compressed else raw
            output = self._bodies[key]
        headers = [("Content-Type", content_type)] + ([("Content-Encoding", "gzip")] if compressed else [])
        return output, headers

    def app(self, environ, start_response):
        """WSGI: GET any path answers the metrics (as prometheus_client's app does), other methods 405."""
        if environ["REQUEST_METHOD"] != "GET":
            start_response("405 Method Not Allowed", [("Allow", "GET")])
            return [b""]
        output, headers = self.body(environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING"))
        start_response("200 OK", headers)
        return [output]


EXPOSITION = Exposition(REGISTRY)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        """No line per scrape on stderr."""


_server_lock = threading.Lock()
_server: ThreadingWSGIServer | None = None


def port_from_env() -> int | None:
    """The port of training's /metrics from MEDRL_METRICS_PORT (set by --metrics-port); None: do not serve."""
    text = os.environ.get(PORT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise MetricsError(
            f"--metrics-port / {PORT_ENV}={text!r}: give a TCP port number (e.g. 9400), or leave it unset"
        )
    return int(text)


def serve(port: int, addr: str | None = None) -> int:
    """Serve REGISTRY (through EXPOSITION) on http://addr:port/metrics from a daemon thread, once per process;
    returns the port."""
    global _server
    with _server_lock:
        if _server is not None:
            return _server.server_port
        addr = addr or os.environ.get(ADDR_ENV) or "0.0.0.0"
        try:
            family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
            _server = make_server(addr, port, EXPOSITION.app, server_class, handler_class=_QuietHandler)
        except OSError as err:
            raise MetricsError(
                f"--metrics-port {port}: cannot listen on {addr}:{port} ({err.strerror}); choose a free port"
            ) from None
        threading.Thread(target=_server.serve_forever, name="medrl-metrics", daemon=True).start()
        log.info("serving metrics on http://%s:%d/metrics", addr, _server.server_port)
        return _server.server_port


def stop_serving() -> None:
    global _server
    with _server_lock:
        if _server is not None:
            _server.shutdown()
            _server.server_close()
            _server = None
