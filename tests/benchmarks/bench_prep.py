"""Prep speed and memory: PMC-VQA-style CSVs with one real JPEG per row, prepared in a fresh process whose
whole process tree (main + image workers) is sampled for resident memory. 10K and 50K rows side by side.

The rows share 64 pictures, so the leak check (on by default) would quarantine every test row as a copy of a
training image: it is off here, and bench_leak.py measures it at the paper's scale."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support.medvqa_fixtures import image_bytes

SIZES = (10_000, 50_000)
PREP = """
import json, sys, time
from pathlib import Path
from medrl.config import DataConfig
from medrl.data.prep import prepare
start = time.perf_counter()
cfg = DataConfig(source="pmc-vqa", input=sys.argv[1], train_size=None, test_size=None, leak_check="off")
summary = prepare(cfg, Path(sys.argv[2]), workers=int(sys.argv[3]) or None)
print(json.dumps({"seconds": time.perf_counter() - start, "summary": summary}))
"""


def build(root: Path, rows: int) -> Path:
    """`train.csv` (80%) and `test.csv` (20%) beside `images/` holding one JPEG per row (128x96, ~3 KB)."""
    pictures = [image_bytes(seed, "JPEG", size=(128, 96)) for seed in range(64)]
    images = root / "images"
    images.mkdir(parents=True)
    header = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]
    options = ["Diffuse uptake pattern", "Focal lesion", "No abnormality", "Cyst"]
    n_train = rows * 4 // 5
    for name, first, last in (("train.csv", 0, n_train), ("test.csv", n_train, rows)):
        with (root / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i in range(first, last):
                figure = f"PMC{i:08d}_Fig1.jpg"
                (images / figure).write_bytes(pictures[i % len(pictures)])
                k = i % 4
                w.writerow(
                    [figure, f"What does figure {i} show?", options[k]]
                    + [f"{c}:{o}" for c, o in zip("ABCD", options, strict=True)]
                    + ["ABCD"[k]]
                )
    return root


def run_prep(src: Path, out: Path, workers: int = 0) -> dict:
    """Prepare in a new process (`workers` 0: the default); returns its timing, the summary and the peak RSS
    of the process tree."""
    import medrl

    env = {**os.environ, "PYTHONPATH": str(Path(medrl.__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", PREP, str(src), str(out), str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    parent = psutil.Process(proc.pid)
    peak_main = peak_tree = 0
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            rss = [p.memory_info().rss for p in tree]
        except psutil.Error:
            continue
        peak_main, peak_tree = max(peak_main, rss[0]), max(peak_tree, sum(rss))
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    return {**result, "peak_main_mib": peak_main / 2**20, "peak_tree_mib": peak_tree / 2**20}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    made = {}
    for rows in SIZES:
        start = time.perf_counter()
        made[rows] = build(tmp_path_factory.mktemp(f"pmc{rows}"), rows)
        print(f"\nfixture: {rows} rows with JPEG files in {time.perf_counter() - start:.1f}s")
    return made


def test_prep_throughput_and_flat_memory(sources, tmp_path):
    results = {rows: run_prep(src, tmp_path / f"out{rows}") for rows, src in sources.items()}
    print(f"\n{'rows':>8} {'records/s':>10} {'seconds':>8} {'peak main MiB':>14} {'peak tree MiB':>14}")
    for rows, r in results.items():
        assert r["summary"]["train"] + r["summary"]["test"] == rows
        print(
            f"{rows:>8} {rows / r['seconds']:>10.0f} {r['seconds']:>8.1f} {r['peak_main_mib']:>14.1f} "
            f"{r['peak_tree_mib']:>14.1f}"
        )
    small, large = (results[n] for n in SIZES)
    ratio = large["peak_main_mib"] / small["peak_main_mib"]
    print(
        f"peak memory of the main process, {SIZES[1]} vs {SIZES[0]} rows: x{ratio:.2f} for x{SIZES[1] // SIZES[0]} rows"
    )
    assert ratio < 1.5, "prep memory grows with the number of rows"

    from medrl.data.prep import default_workers

    alone = run_prep(sources[SIZES[0]], tmp_path / "alone", workers=1)
    print(
        f"{SIZES[0]} rows with images checked in the main process: {SIZES[0] / alone['seconds']:.0f} records/s; "
        f"{default_workers()} worker processes (the default here) are x{alone['seconds'] / small['seconds']:.2f} faster"
    )
