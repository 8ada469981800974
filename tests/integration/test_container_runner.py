"""`medrl run --runner container`: the reduced demo study (zero-shot, SFT, SFT->GRPO) with every step in an image
built here (podman, as root with runc; the stand-in base and the wheelhouse, as tests/integration/test_images.py
builds them), as UID 1000 on a read-only root file system, artifacts in a SeaweedFS on loopback; its accuracy per
arm against the same study through the subprocess runner; and what the runner refuses before any step.

The demo's tiny base model is built by the init step with Qwen2-VL's processor, which needs torchvision, which the
slim image leaves out: here every step runs on the CPU train image (`--image` and `--train-image` both)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from medrl import store
from medrl.pipelines.local import local_tasks
from tests.support.reduced_demo import ARMS, TASK_LINE, answers, command

build = pytest.importorskip("containers.build", reason="containers/build.py, the images' build tool, is not here")
pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(3600)]
TRAIN_CPU = "localhost/medrl-test-train-cpu:0.1.0"


@pytest.fixture(scope="module")
def train_cpu_image(monkeypatch_module) -> str:
    """The CPU train image (podman's layer cache makes this quick once test_images.py has built it)."""
    try:
        engine = build.find_engine("podman")
    except build.BuildError as err:
        pytest.fail(f"{err} (as root, `make system-packages` installs podman, runc and debootstrap)")
    monkeypatch_module.setenv("CONTAINERS_CONF", build.engine_env(engine)["CONTAINERS_CONF"])
    monkeypatch_module.delenv("DOCKER_HOST", raising=False)  # medrl starts podman's service for the run
    started = time.monotonic()
    build.make_standin(engine)
    build.fill_wheelhouses("train-cpu", torch_index=None)  # its own and the slim one
    build.build(engine, "train-cpu", TRAIN_CPU, {"PYTHON_IMAGE": build.STANDIN}, wheelhouse=True, offline=True)
    print(f"train-cpu image ready in {time.monotonic() - started:.0f} s")
    return TRAIN_CPU


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_reduced_demo_in_containers_matches_the_subprocess_runner(
    train_cpu_image, s3_bucket, tmp_path, reduced_demo
):
    images = ["--runner", "container", "--image", train_cpu_image, "--train-image", train_cpu_image]
    started = time.monotonic()
    out = subprocess.run(
        command(f"{s3_bucket}/runs", tmp_path / "kfp", *images), capture_output=True, text=True, timeout=1800
    )
    assert (tmp_path / "kfp").stat().st_mode & 0o777 != 0o777  # only the run's own steps/ folder is opened to all
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    run = f"{s3_bucket}/runs/demo/test-run"
    assert store.is_committed(f"{run}/report")
    assert store.exists(f"{run}/report/report.md") and store.exists(f"{run}/logs/init-run.log")
    accuracy = {
        arm: json.loads(store.read_text(f"{run}/arms/{arm}/metrics.json"))["metrics"]["accuracy"]["mean"]
        for arm in ARMS
    }
    # Same seed, same tiny model (built byte for byte the same), same data, the same torch (requirements.lock) on the
    # same CPU: the same accuracy and the very same completions, question by question, in either runner (accuracy
    # alone is weak here: this reduced study leaves every arm near 0).
    assert accuracy == reduced_demo.accuracy(), (accuracy, reduced_demo.accuracy(), f"{took:.0f} s")
    completions = {arm: answers(store.read_text(f"{run}/arms/{arm}/predictions.jsonl")) for arm in ARMS}
    assert completions == reduced_demo.completions()
    assert len({text for arm in ARMS for text in completions[arm].values()}) > 1  # the arms did not all say nothing
    tasks = [line for line in out.stdout.splitlines() if re.match(TASK_LINE, line)]
    assert len(tasks) == local_tasks(len(ARMS)) and all(" success " in t for t in tasks), out.stdout
    assert "expression selector" not in out.stdout + out.stderr
    # medrl's own lines only (where the steps run, the run's start, a bucket made): nothing of kfp.local's.
    assert all(line.startswith("medrl: ") for line in out.stderr.splitlines()), out.stderr
    assert "PipInstallManager" not in out.stderr and len(out.stderr.splitlines()) <= 3, out.stderr
    # The steps ran in the image (the runner's UID 1000, read-only root and tmpfs /tmp: tests/unit/pipelines).
    init_log = store.read_text(f"{run}/logs/init-run.log")
    assert f"Found image '{train_cpu_image}'" in init_log
    print(f"container runner: {took:.0f} s, accuracy {accuracy}, console {len(out.stdout.splitlines())} + "
          f"{len(out.stderr.splitlines())} lines")  # fmt: skip
    print(f"subprocess runner: accuracy {reduced_demo.accuracy()}, console {len(reduced_demo.out.stdout.splitlines())}"
          f" + {len(reduced_demo.out.stderr.splitlines())} lines")  # fmt: skip


def test_an_image_not_built_stops_before_any_step(train_cpu_image, s3_bucket, tmp_path):
    missing = "localhost/medrl-no-such-image:0.1.0"
    out = subprocess.run(
        command(f"{s3_bucket}/runs", tmp_path / "kfp", "--runner", "container", "--image", train_cpu_image,
                "--train-image", missing),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"image {missing} is not among this engine's images; build it with `make images`" in out.stderr
    assert "--train-image" in out.stderr and "Traceback" not in out.stderr
    assert not store.exists(f"{s3_bucket}/runs/demo/test-run/config.yaml")  # nothing written, no step started
