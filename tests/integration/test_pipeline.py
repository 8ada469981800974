"""The study pipeline: it compiles (real kfp compiler) with the slim image for the orchestrating steps and the
training image for evaluation and the training pods, its retry policies are as the cluster needs them, the
committed YAML is current, and a reduced demo runs end to end through kfp.local (real kfp SDK, subprocess runner),
writing every artifact of the run layout."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medrl.config import MAX_LEVELS
from medrl.kfp.parameters import DEFAULT_IMAGE, DEFAULT_SLIM_IMAGE, packaged_pipeline
from medrl.pipelines.compile import compile_pipeline
from medrl.pipelines.local import local_tasks
from medrl.pipelines.study import TRAIN_RETRY
from tests.support.reduced_demo import ARMS, TASK_LINE

COMMITTED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled" / "study.yaml"


def test_compiled_pipeline_is_current(tmp_path):
    fresh = compile_pipeline(tmp_path / "study.yaml")  # what `make compile` does: the default images
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
    images = {name: e["container"]["image"] for name, e in executors.items()}
    # Only evaluate runs on the training image; every other step only orchestrates: the slim image.
    assert {n for n, i in images.items() if i == "ghcr.io/medrl/medrl:0.1.0"} == {
        "exec-evaluate",
        *(f"exec-evaluate-{i}" for i in range(2, MAX_LEVELS + 1)),
    }
    assert set(images.values()) == {"ghcr.io/medrl/medrl:0.1.0", "ghcr.io/medrl/medrl-slim:0.1.0"}
    assert DEFAULT_SLIM_IMAGE == "ghcr.io/medrl/medrl-slim:0.1.0" and DEFAULT_IMAGE == "ghcr.io/medrl/medrl:0.1.0"
    assert params["image"]["defaultValue"] == DEFAULT_IMAGE  # the training pods
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


def test_compiled_for_a_slim_and_a_training_image(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "medrl", "pipeline", "compile", "--out", str(tmp_path / "s.yaml"),
         "--image", "registry.hospital.internal/medrl-slim:1.2",
         "--train-image", "registry.hospital.internal/medrl:1.2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    spec, _platform = yaml.safe_load_all((tmp_path / "s.yaml").read_text())
    images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
    for name, image in images.items():
        want = "medrl:1.2" if name.startswith("exec-evaluate") else "medrl-slim:1.2"
        assert image == f"registry.hospital.internal/{want}", name
    assert images["exec-train"].endswith("medrl-slim:1.2")  # the launcher task: it only submits and follows
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == (
        "registry.hospital.internal/medrl:1.2"
    )


def test_compiled_into_a_folder_as_study_yaml(tmp_path):
    """issue 30: `--out DIR` writes DIR/study.yaml (kfp itself ends in a ValueError on a folder)."""
    out = subprocess.run(
        [sys.executable, "-m", "medrl", "pipeline", "compile", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"compiled: {tmp_path / 'study.yaml'}" in out.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["study.yaml"]
    spec, _platform = yaml.safe_load_all((tmp_path / "study.yaml").read_text())
    assert spec["pipelineInfo"]["name"]


def tasks(spec):
    """Every task of the compiled pipeline, by name, with the DAG it is in."""
    found = {name: ("root", t) for name, t in spec["root"]["dag"]["tasks"].items()}
    for comp, c in spec["components"].items():
        found |= {name: (comp, t) for name, t in (c.get("dag") or {}).get("tasks", {}).items()}
    return found


def test_train_and_idempotent_tasks_retry_and_the_exit_handler_waits_for_them(tmp_path):
    spec, _platform = yaml.safe_load_all(compile_pipeline(tmp_path / "study.yaml").read_text())
    found = tasks(spec)
    seconds = {"s": 1, "h": 3600, "d": 86400}
    for level in range(1, MAX_LEVELS + 1):
        suffix = "" if level == 1 else f"-{level}"
        where, train = found[f"train{suffix}"]
        policy = train["retryPolicy"]
        assert policy["maxRetryCount"] == TRAIN_RETRY["num_retries"] >= 2
        assert policy["backoffDuration"] == "60s" and policy["backoffFactor"] == 2.0
        # The backend gives up retrying once this much time has passed since the first attempt started (kfp's
        # default: one hour): it must outlast the longest a job is followed (7 days), or a lost launcher pod of
        # a long run would fail the task.
        assert int(policy["backoffMaxDuration"][:-1]) > 7 * seconds["d"]
        assert where.startswith("comp-for-loop")
        assert "retryPolicy" not in found[f"evaluate{suffix}"][1]  # GPU hours: not retried blindly
        assert found[f"arms-at-level{suffix}"][1]["retryPolicy"]["maxRetryCount"] == 2
    for name in ("init-run", "prep", "report", "cleanup"):
        assert found[name][1]["retryPolicy"]["maxRetryCount"] == 2, name
    # The loops and the train tasks sit inside the exit handler's group; cleanup runs once that group has
    # completed, i.e. after the train tasks' retries, never while one is pending.
    assert found["for-loop-2"][0] == "comp-exit-handler-1" and found["exit-handler-1"][0] == "root"
    cleanup = found["cleanup"][1]
    assert cleanup["dependentTasks"] == ["exit-handler-1"]
    assert cleanup["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


def test_local_runs_have_no_retries(tmp_path):
    from kfp import compiler

    from medrl.pipelines.study import build

    compiler.Compiler().compile(build(retries=False), str(tmp_path / "local.yaml"))
    spec, _platform = yaml.safe_load_all((tmp_path / "local.yaml").read_text())
    assert not any("retryPolicy" in t for _, t in tasks(spec).values())


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
        assert "securityContext" not in cfg  # KFP < 2.16 refuses it (tests/unit/pipelines/test_study.py)
    evaluate = executors["exec-evaluate"]
    assert evaluate["nodeSelector"]["nodeSelectorJson"] == {"componentInputParameter": "pipelinechannel--node_selector"}
    assert evaluate["tolerations"][0]["tolerationJson"] == {"componentInputParameter": "pipelinechannel--tolerations"}
    assert evaluate["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    # the thinking score's judge key, where the judge asks for one (only evaluate calls the judge)
    keyed = {
        name for name, cfg in executors.items() for s in cfg["secretAsEnv"] if s.get("secretName") == "medrl-judge-key"
    }
    assert keyed == {"exec-evaluate", *(f"exec-evaluate-{i}" for i in range(2, MAX_LEVELS + 1))}
    (key,) = [s for s in evaluate["secretAsEnv"] if s.get("secretName") == "medrl-judge-key"]
    assert key["keyToEnv"] == [{"envVar": "MEDRL_JUDGE_API_KEY", "secretKey": "api-key"}] and key["optional"] is True
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
def test_reduced_demo_runs_through_kfp_local(reduced_demo):
    run = reduced_demo.run
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


@pytest.mark.slow
def test_reduced_demo_console_is_one_line_per_task(reduced_demo):
    """kfp.local's own INFO lines (a loop item's "Applying expression selector") and its warnings (settings the
    local runner ignores, a non-Python base image) go to the run's logs/, not the console."""
    out = reduced_demo.out
    console = out.stdout + out.stderr
    tasks = [line for line in out.stdout.splitlines() if re.match(TASK_LINE, line)]
    assert len(tasks) == local_tasks(len(ARMS)), out.stdout
    for chatter in ("expression selector", "have no effect in the current local runner", "non-Python base image"):
        assert chatter not in console
    logs = "".join(p.read_text() for p in (reduced_demo.run / "logs").glob("*.log"))
    assert "Applying expression selector" in logs and "have no effect in the current local runner" in logs
    # What is left on the console: the run's start line on stderr, the task lines, Table 1 and where the report is.
    assert len(out.stderr.splitlines()) <= 2, out.stderr
