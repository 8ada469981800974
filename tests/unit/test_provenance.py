"""Provenance of a run (medrl.provenance, study.prep/write_provenance, --like): what produced it and what differs."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
from pathlib import Path

import pytest

from medrl import provenance, store, study
from medrl.config import ConfigError
from medrl.pipelines import local
from medrl.report import build_report
from medrl.store.layout import RunLayout
from tests.support.report_study import full_arms

ROOT = Path(__file__).resolve().parents[2]


def _dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (root / "images" / name).write_bytes(name.encode() * 10)
    for split, image in (("train", "images/a.png"), ("test", "images/b.png")):
        (root / f"{split}.jsonl").write_text(json.dumps({"id": split, "image": image, "question": "q?"}) + "\n")
    return root


def test_environment_names_the_versions_and_the_checkout():
    env = provenance.environment()
    assert env["libraries"]["torch"] == md.version("torch") and env["libraries"]["trl"] == md.version("trl")
    assert set(provenance.LIBRARIES) <= set(env["libraries"])  # absent ones (vllm here) recorded as None
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert env["medrl"]["git"]["commit"] == head
    assert env["hardware"]["cpus"] >= 1


def test_split_fingerprint_follows_rows_and_image_bytes(tmp_path):
    data = _dataset(tmp_path / "d")
    first = provenance.split_fingerprint(data, "test")
    assert first["rows"] == 1 and first == provenance.split_fingerprint(data, "test")
    (data / "images" / "b.png").write_bytes(b"other pixels")  # same rows, another image
    assert provenance.split_fingerprint(data, "test")["sha256"] != first["sha256"]
    assert provenance.split_fingerprint(data, "train") != first


def test_prep_commits_provenance_with_config_seeds_and_splits(tmp_path):
    overrides = ["data.train_size=16", "data.test_size=8", "arms.sft.seed=5"]
    uri = study.init_run(preset="demo", overrides=overrides, store_uri=str(tmp_path / "runs"), run_id="r1")
    study.prep(uri)
    run = RunLayout(uri)
    doc = json.loads(store.read_text(run.provenance))
    assert doc["config"] == store.read_text(run.config)
    assert doc["seeds"]["data"] == 0 and doc["seeds"]["train"]["sft"] == 5
    assert doc["splits"]["train"]["rows"] == 16 and doc["splits"]["test"]["rows"] == 8
    assert doc["splits"]["test"] == provenance.split_fingerprint(store.open_dir(run.data), "test")
    assert doc["libraries"]["transformers"] == md.version("transformers")

    config_text, origin = local.like_run(uri)
    assert config_text == doc["config"] and origin == doc
    assert local.like_warnings({k: v for k, v in origin.items() if k != "splits"}, provenance.environment()) == []
    older = {**origin, "libraries": {**origin["libraries"], "trl": "0.9.0"}, "python": "3.10.1"}
    warned = local.like_warnings(older, provenance.environment())
    assert f"--like: trl: 0.9.0 then, {md.version('trl')} now" in warned and any("python: 3.10.1" in w for w in warned)
    other = {"splits": {**origin["splits"], "test": {"rows": 9, "sha256": "0" * 64}}}
    assert local.like_warnings({"splits": origin["splits"]}, other) == [
        f"--like: data fingerprint of the test split: 8 rows {origin['splits']['test']['sha256'][:12]} then, "
        "9 rows 000000000000 now"
    ]


def test_like_refuses_a_folder_that_is_not_a_committed_run(tmp_path):
    with pytest.raises(ConfigError, match="not a committed run"):
        local.like_run(str(tmp_path))
    uri = study.init_run(preset="demo", store_uri=str(tmp_path / "runs"), run_id="r2")  # initialised, never prepared
    with pytest.raises(ConfigError, match=r"not a committed run \(provenance.json missing\)"):
        local.like_run(uri)


def test_report_has_a_reproducibility_section(tmp_path):
    doc = {
        "medrl": {"version": "0.1.0", "git": {"commit": "0123456789abcdef", "dirty": True}},
        "python": "3.11.7",
        "libraries": {"torch": "2.14.1", "vllm": None},
        "hardware": {"cpus": 16, "cuda": "13.0", "driver": "580.1", "gpus": {"count": 4, "models": ["NVIDIA A100"]}},
        "seeds": {"data": 0, "train": {"grpo": 0}},
        "splits": {"test": {"rows": 7000, "images": 6990, "sha256": "ab" * 32}},
    }
    text = build_report("Study", full_arms(), tmp_path, provenance=doc, run_uri="file:///runs/x/r1").read_text()
    section = text[text.index("## Reproducibility") :]
    assert "| medrl | 0.1.0 (commit 0123456789ab, uncommitted changes) |" in section
    assert "| hardware | 4 x NVIDIA A100 |" in section and "| CUDA (torch build) / driver | 13.0 / 580.1 |" in section
    assert "| test split | 7000 rows, 6990 images, sha256 abababababababab |" in section
    assert "vllm" not in section and "medrl run --like file:///runs/x/r1" in section


def test_like_refuses_the_run_it_repeats_as_the_new_run(tmp_path, monkeypatch):
    """`--like R --run-id R`: every step would find its output committed and the original's Table 1 would read as a
    reproduction. Refused before anything runs (kfp.local's pipeline stands replaced by a list of what it would run)."""
    uri = study.init_run(preset="demo", overrides=["data.train_size=16", "data.test_size=8"],
                         store_uri=str(tmp_path / "runs"), run_id="r1")  # fmt: skip
    study.prep(uri)
    started: list[dict] = []
    monkeypatch.setattr(local, "run_local", lambda params, *rest: started.append(params))
    monkeypatch.setattr(study, "collect", lambda run_uri: [])
    with pytest.raises(ConfigError, match="--like with --run-id r1: that is the run to repeat"):
        local.run_study(like=uri, run_id="r1", pipeline_root=tmp_path / "kfp")
    assert started == []
    local.run_study(like=uri, run_id="r2", pipeline_root=tmp_path / "kfp")  # another id: repeated
    assert [p["run_id"] for p in started] == ["r2"]
