"""The laptop demo as a user runs it, timed: wall time and peak memory of the whole process tree (kfp.local runs
each task in its own process), printed beside the goals and asserted. Goals: `medrl demo` <= 10 min and
<= 4 GiB; the full demo (every dimension of the paper, preset demo-full) <= 30 min.

    make bench        (or: python -m pytest tests/benchmarks/bench_demo.py -s)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

GiB = 1024**3


def run_timed(args: list[str], cwd: Path) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run `python -m medrl <args>`; returns wall seconds, the peak of the summed RSS of the process and all its
    descendants (sampled every 0.2 s) and the completed process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "medrl", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:  # a task process ended between listing and reading it
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    return wall, peak, subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(errors="replace"), "")


def _report(runs: Path) -> dict:
    summaries = sorted(runs.rglob("report/summary.json"))
    assert summaries, f"no report under {runs}"
    return json.loads(summaries[-1].read_text())


def test_demo_wall_time_and_memory(tmp_path):
    wall, peak, done = run_timed(["demo", "--out", str(tmp_path / "runs")], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = _report(tmp_path / "runs")
    print(f"\nmedrl demo: wall {wall / 60:.1f} min (goal <= 10 min), peak memory {peak / GiB:.2f} GiB (goal <= 4 GiB)")
    for claim in summary.get("findings", []):
        print(f"  {claim['statement']}: {claim['verdict']}")
    # Each RL arm beats the SFT it starts from (observed 2026-12-02: GRPO +16.6 pp, p 2e-8; Dr.GRPO +10.3 pp,
    # p 7e-4, on 1,024 paired questions; demo_calibration.md); the gain asserted is half the smaller one
    against_sft = {c["arm"]: c for c in summary["comparisons"] if c["baseline"] == "sft"}
    for arm in ("sft-grpo", "sft-drgrpo"):
        result = against_sft[arm]
        print(f"  {arm} vs sft: {100 * result['deltas']['accuracy']:+.1f} pp, McNemar {result['tests']['accuracy']}")
        assert result["deltas"]["accuracy"] >= 0.05 and result["tests"]["accuracy"]["p_value"] < 0.01, arm
    verdicts = {c["claim"]: c["verdict"] for c in summary["findings"]}
    assert verdicts["grpo_vs_sft"] == "reproduced", verdicts
    assert wall <= 600, f"the demo took {wall / 60:.1f} min; the goal is 10 min on 2 cores"
    assert peak <= 4 * GiB, f"the demo peaked at {peak / GiB:.2f} GiB; the goal is 4 GiB"


@pytest.mark.skipif(not os.environ.get("MEDRL_BENCH_FULL"), reason="30 minutes: set MEDRL_BENCH_FULL=1 to run it")
def test_full_demo_wall_time(tmp_path):
    wall, peak, done = run_timed(["run", "--preset", "demo-full", "--store", f"file://{tmp_path / 'runs'}"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = _report(tmp_path / "runs")
    print(f"\nmedrl demo --full: wall {wall / 60:.1f} min (goal <= 30 min), peak memory {peak / GiB:.2f} GiB")
    for claim in summary.get("findings", []):
        print(f"  {claim['statement']}: {claim['verdict']}")
    assert len(summary["arms"]) == 10
    assert wall <= 1800, f"the full demo took {wall / 60:.1f} min; the goal is 30 min on 2 cores"
