"""The image self-check's logic (medrl.image_check), without an image: each check on inputs that pass and that fail.
tests/integration/test_images.py runs the real command inside the built images."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from medrl import image_check as ic
from medrl.cli import app


def test_user_must_be_1000():
    assert ic.user_check(1000, 1000).status == "ok"
    assert ic.user_check(0, 0).status == "FAIL"
    assert ic.user_check(1000, 0).status == "FAIL"


def test_cache_folders_must_lie_under_tmp():
    assert ic.cache_dirs_check({"HOME": "/tmp", "HF_HOME": "/tmp/hf"}).status == "ok"
    bad = ic.cache_dirs_check({"HOME": "/tmp", "HF_HOME": "/root/.cache/hf"})
    assert bad.status == "FAIL" and "HF_HOME" in bad.detail
    assert ic.cache_dirs_check({"HOME": "/tmpfoo"}).status == "FAIL"  # a prefix is not a folder
    assert ic.cache_dirs_check({}).status == "FAIL"  # HOME unset: libraries fall back to /root or /


def test_writable_folders_outside_scratch_are_found(tmp_path):
    (tmp_path / "tmp" / "deep").mkdir(parents=True)
    (tmp_path / "opt" / "venv").mkdir(parents=True)
    (tmp_path / "usr").mkdir()
    scratch = (str(tmp_path / "tmp"),)
    writable = {str(tmp_path / "opt" / "venv")}  # as root everything is writable: the access test is given
    found = ic.writable_outside_tmp(str(tmp_path), scratch, access=lambda p, _mode: p in writable)
    assert found == [str(tmp_path / "opt" / "venv")]
    assert ic.writable_outside_tmp(str(tmp_path), scratch, access=lambda p, _mode: p.startswith(scratch[0])) == []


def test_write_attempts_report_folders_that_took_a_file(tmp_path):
    assert ic.write_attempts([str(tmp_path), str(tmp_path / "missing")]) == [str(tmp_path)]
    assert list(tmp_path.iterdir()) == []  # the probe file is removed again


def test_no_writes_check_fails_where_a_file_can_be_created(tmp_path):
    check = ic.no_writes_check(root=str(tmp_path / "none"), probe=[str(tmp_path)])
    assert check.status == "FAIL" and str(tmp_path) in check.detail


def test_root_read_only_from_proc_mounts():
    assert ic.root_read_only("overlay / overlay ro,relatime,lowerdir=a 0 0\ntmpfs /tmp tmpfs rw 0 0\n")
    assert not ic.root_read_only("overlay / overlay rw,relatime 0 0\n")
    assert not ic.root_read_only("")


def test_lock_check_compares_every_pin():
    pins = ic.read_lock("# comment\ntorch==2.13.0+cpu\nPyYAML==6.0.3\n")
    assert pins == {"torch": "2.13.0+cpu", "pyyaml": "6.0.3"}
    assert ic.lock_check(pins, {"torch": "2.13.0+cpu", "pyyaml": "6.0.3", "pip": "24"}).status == "ok"
    differ = ic.lock_check(pins, {"torch": "2.14.1", "pyyaml": "6.0.3"})
    assert differ.status == "FAIL" and "torch" in differ.detail and "pyyaml" not in differ.detail
    assert ic.lock_check(pins, {"torch": "2.13.0+cpu"}).status == "FAIL"  # missing
    assert ic.lock_check({}, {}).status == "FAIL"


def test_cpu_variant_reports_vllm_and_flash_attn_as_not_part_of_it(monkeypatch):
    pins = {d: "1.0" for d in ic.TRAIN_STACK}
    monkeypatch.setattr(ic.md, "version", lambda dist: "1.0")
    imported = []
    checks = {c.name: c for c in ic.stack_checks("train-cpu", pins, importer=imported.append)}
    assert checks["vllm"].status == checks["flash-attn"].status == "n/a"
    assert "CPU variant" in checks["vllm"].detail
    assert all(checks[d].status == "ok" for d in ("torch", "torchvision", "transformers", "trl", "peft", "deepspeed"))
    assert "vllm" not in imported and "torch" in imported
    gpu = {c.name: c for c in ic.stack_checks("train", pins, importer=imported.append)}
    assert all(c.status == "ok" for c in gpu.values())  # the GPU image must import both
    unbuilt = {c.name: c for c in ic.stack_checks("train", pins, importer=imported.append, flash_attn_built=False)}
    assert unbuilt["flash-attn"].status == "n/a" and "FLASH_ATTN=0" in unbuilt["flash-attn"].detail
    assert unbuilt["vllm"].status == "ok"


def test_stack_fails_on_a_missing_import_a_version_off_the_lock_or_a_pin_missing():
    def importer(name):
        if name == "vllm":
            raise ModuleNotFoundError("No module named 'vllm'")

    lock = ic.read_lock(Path("requirements.lock").read_text())
    pins = {**lock, "vllm": "0.30.0", "flash-attn": "2.8.3.post2"}
    pins["peft"] = "0.0.1"
    checks = {c.name: c for c in ic.stack_checks("train", pins, importer=importer)}
    assert checks["torch"].status == "ok"  # this venv holds requirements.lock's versions
    assert checks["vllm"].status == "FAIL" and "ModuleNotFoundError" in checks["vllm"].detail
    assert checks["peft"].status == "FAIL" and "0.0.1" in checks["peft"].detail
    del pins["trl"]
    assert {c.name: c for c in ic.stack_checks("train", pins, importer=importer)}["trl"].status == "FAIL"


def test_step_modules_are_the_imports_inside_a_component():
    source = Path("components/report.py").read_text()
    modules = ic.step_modules(source)
    assert "medrl.report.ui" in modules and "medrl.study" in modules


def test_steps_check_imports_what_each_slim_step_imports():
    imported = []

    def importer(name):
        imported.append(name)
        if name == "medrl.report.ui":
            raise ImportError("No module named 'torchvision'")

    checks = {c.name: c for c in ic.steps_check("slim", importer=importer)}
    assert checks["step report"].status == "FAIL" and "torchvision" in checks["step report"].detail
    assert checks["step prep"].status == "ok" and "medrl.study" in imported
    assert "step evaluate" not in checks  # evaluate runs on the train image
    assert "step evaluate" in {c.name for c in ic.steps_check("train", importer=lambda n: None)}


def test_compiler_check_compiles_against_python_h(tmp_path, monkeypatch):
    assert ic.compiler_check(str(tmp_path)).status == "ok"  # this machine has cc and Python.h
    paths = {"include": str(tmp_path / "no-headers")}
    monkeypatch.setattr(ic.sysconfig, "get_paths", lambda: paths)
    missing = ic.compiler_check(str(tmp_path))
    assert missing.status == "FAIL" and "Python.h" in missing.detail


def test_tiny_models_are_reported_as_not_buildable_without_torchvision():
    assert ic.tiny_models_check(True).status == "ok"
    missing = ic.tiny_models_check(False)
    assert missing.status == "n/a" and "run init on the train image" in missing.detail


def test_vllm_server_check_runs_the_entrypoints_argument_parsing(tmp_path):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\n[ "$2" = vllm.entrypoints.openai.api_server ] && echo "usage: --model MODEL"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    assert ic.vllm_server_check(str(fake)).status == "ok"
    assert ic.vllm_server_check(sys.executable, gpu=False).status == "FAIL"  # no vLLM in this venv


def test_vllm_server_check_without_a_gpu_says_how_far_it_got(tmp_path):
    """vLLM 0.33 needs a GPU to build its parser: that one failure, on a machine without a GPU, is n/a."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\necho '  File \"cli_args.py\", line 475, in make_arg_parser' >&2\n"
        "echo 'RuntimeError: Failed to infer device type, please set ...' >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    assert ic.vllm_server_check(str(fake), gpu=False).status == "n/a"
    assert ic.vllm_server_check(str(fake), gpu=True).status == "FAIL"  # on a GPU node it must parse
    other = tmp_path / "other"
    other.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named vllm' >&2\nexit 1\n")
    other.chmod(other.stat().st_mode | stat.S_IEXEC)
    assert ic.vllm_server_check(str(other), gpu=False).status == "FAIL"


def test_image_checks_refuse_an_image_that_declares_another(monkeypatch):
    monkeypatch.setenv("MEDRL_IMAGE", "slim")
    checks = ic.image_checks("train")
    assert checks[-1].name == "image" and checks[-1].status == "FAIL" and "MEDRL_IMAGE=slim" in checks[-1].detail
    with pytest.raises(ValueError, match="unknown image"):
        ic.image_checks("gpu")


def test_report_exit_status_counts_only_failures():
    lines = []
    assert ic.report([ic.ok("a", "x"), ic.Check("b", "n/a", "y")], lines.append) == 0
    assert ic.report([ic.ok("a", "x"), ic.fail("c", "z")], lines.append) == 1
    assert lines[-1] == "[FAIL] c: z" and lines[1] == "[n/a ] b: y"


def test_doctor_image_option_rejects_an_unknown_image():
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["doctor", "--image", "gpu"])
    assert out.exit_code == 2 and "one of slim, train, train-cpu, judge" in out.output
