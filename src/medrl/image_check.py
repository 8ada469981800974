"""An image's self-check (`medrl doctor --image slim|train|train-cpu|judge`): run inside the image, it verifies what
that image must hold and that it runs as the pods do (UID 1000, nothing writable outside /tmp).

Standard library only: the judge image has no medrl, so this file's source is run there with vLLM's Python
(`python -c SOURCE judge`); the others run it as `medrl doctor --image NAME`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

IMAGES = ("slim", "train", "train-cpu", "judge")
UID = GID = 1000
# Where an image may write: /tmp (an emptyDir on the cluster, --tmpfs here), the kernel's and the engine's own
# mounts, and the FHS scratch folders an engine mounts as tmpfs under --read-only (/var/tmp, /run).
SCRATCH = ("/tmp", "/var/tmp", "/run", "/dev", "/proc", "/sys")
# Variables that point libraries' caches somewhere: each must lie under /tmp when set (HOME always).
CACHE_VARS = ("HOME", "HF_HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "MPLCONFIGDIR", "VLLM_CACHE_ROOT")
LOCK = Path("/opt/medrl/requirements.lock")  # the lock each medrl image was installed from, kept beside its venv
# The training stack the train image must hold at its lock's versions: distribution name -> import name.
TRAIN_STACK = {
    "torch": "torch",
    "torchvision": "torchvision",  # Qwen2-VL's video processor, which its processor cannot be built without
    "transformers": "transformers",
    "trl": "trl",
    "peft": "peft",
    "deepspeed": "deepspeed",
    "vllm": "vllm",
    "flash-attn": "flash_attn",
}
# Not part of the CPU variant of the train image (requirements.lock: no vLLM, no flash-attn, no CUDA compiler).
GPU_ONLY = ("vllm", "flash-attn")
# The pipeline's components and the image each runs on (pipelines/study.py: evaluate on the train image).
COMPONENTS = {
    "start": "slim",
    "prep": "slim",
    "train": "slim",
    "report": "slim",
    "cleanup": "slim",
    "evaluate": "train",
}


@dataclass
class Check:
    name: str
    status: str  # "ok", "FAIL" or "n/a" (not part of this image, said so rather than skipped)
    detail: str


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def fail(name: str, detail: str) -> Check:
    return Check(name, "FAIL", detail)


def user_check(uid: int, gid: int) -> Check:
    if (uid, gid) == (UID, GID):
        return ok("user", f"UID {uid}, GID {gid}")
    return fail("user", f"runs as UID {uid}, GID {gid}; the pods run as {UID}:{GID} (USER {UID}:{GID} in the image)")


def cache_dirs_check(env: dict[str, str]) -> Check:
    outside = {k: env[k] for k in CACHE_VARS if k in env and not _under(env[k], "/tmp")}
    if "HOME" not in env:
        outside["HOME"] = "(unset)"
    if outside:
        return fail("cache folders", f"not under /tmp: {outside}")
    return ok("cache folders", ", ".join(f"{k}={env[k]}" for k in CACHE_VARS if k in env))


def tmp_check(tmp: str = "/tmp") -> Check:
    try:
        with tempfile.NamedTemporaryFile(dir=tmp) as f:
            f.write(b"x")
    except OSError as err:
        return fail("/tmp writable", f"{tmp}: {err.strerror}")
    return ok("/tmp writable", tmp)


def writable_outside_tmp(root: str = "/", scratch: tuple[str, ...] = SCRATCH, access=os.access) -> list[str]:
    """Folders outside the scratch ones this user could create files in (a read-only root file system has none)."""
    found = []
    for top, dirs, _ in os.walk(root):
        dirs[:] = [d for d in dirs if not any(_under(os.path.join(top, d), s) for s in scratch)]
        if not any(_under(top, s) for s in scratch) and access(top, os.W_OK):
            found.append(top)
            dirs[:] = []  # one finding per tree
    return found


def write_attempts(paths: list[str]) -> list[str]:
    """Really try to create a file in each folder; the ones that accepted it (the file is removed again)."""
    accepted = []
    for path in paths:
        try:
            fd, name = tempfile.mkstemp(dir=path)
        except OSError:
            continue
        os.close(fd)
        os.unlink(name)
        accepted.append(path)
    return accepted


def root_read_only(mounts: str) -> bool:
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "/":
            return "ro" in fields[3].split(",")
    return False


def no_writes_check(root: str = "/", probe: list[str] | None = None) -> Check:
    probe = probe if probe is not None else ["/", "/etc", "/usr", "/opt", sys.prefix, sysconfig.get_paths()["purelib"]]
    writable = sorted(set(writable_outside_tmp(root)) | set(write_attempts(probe)))
    try:
        mode = "read-only root" if root_read_only(Path("/proc/mounts").read_text()) else "root writable by root only"
    except OSError:
        mode = "mounts unknown"
    if writable:
        return fail("nothing writable outside /tmp", f"writable: {writable[:10]}")
    return ok("nothing writable outside /tmp", f"{mode}; tried {', '.join(probe)}")


def read_lock(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        if m := re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line.strip()):
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def lock_check(pins: dict[str, str], installed: dict[str, str]) -> Check:
    """Every pin of the image's lock installed at exactly that version."""
    differ = {n: (installed.get(n), v) for n, v in pins.items() if installed.get(n) != v}
    if not pins:
        return fail("lock", f"{LOCK} holds no pins")
    if differ:
        return fail("lock", f"installed differ from the lock (installed, locked): {dict(sorted(differ.items())[:10])}")
    return ok("lock", f"{len(pins)} packages at the versions of {LOCK}")


def stack_checks(
    image: str, pins: dict[str, str], importer=importlib.import_module, flash_attn_built: bool = True
) -> list[Check]:
    """The training stack imports at the lock's versions; on the CPU variant vLLM and flash-attn are reported as not
    part of it, and flash-attn as not built where the train image was built without it (FLASH_ATTN=0)."""
    checks = []
    for dist, module in TRAIN_STACK.items():
        if image == "train-cpu" and dist in GPU_ONLY:
            checks.append(Check(dist, "n/a", "not part of the CPU variant (requirements.lock; GPU image only)"))
            continue
        if dist == "flash-attn" and not flash_attn_built:
            checks.append(Check(dist, "n/a", "not built in this image (--build-arg FLASH_ATTN=0)"))
            continue
        if dist not in pins:
            checks.append(fail(dist, "not in the image's lock"))
            continue
        try:
            importer(module)
            version = md.version(dist)
        except Exception as err:  # any import failure is the finding, named by its type
            checks.append(fail(dist, f"import {module} failed: {type(err).__name__}: {err}"[:300]))
            continue
        if version != pins[dist]:
            checks.append(fail(dist, f"version {version}, the lock pins {pins[dist]}"))
        else:
            checks.append(ok(dist, f"imports, version {version}"))
    return checks


def compiler_check(tmp: str = "/tmp") -> Check:
    """Compile a C file against Python.h as Triton does at its first kernel launch."""
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").is_file():
        return fail("C compiler and Python.h", f"no Python.h in {include}: install python3.X-dev")
    with tempfile.TemporaryDirectory(dir=tmp) as work:
        src = Path(work, "probe.c")
        src.write_text("#include <Python.h>\nint probe(void) { return PY_MAJOR_VERSION; }\n")
        try:
            out = subprocess.run(
                ["cc", "-c", f"-I{include}", str(src), "-o", str(Path(work, "probe.o"))],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except FileNotFoundError:
            return fail("C compiler and Python.h", "no `cc`: install gcc and libc6-dev")
        if out.returncode != 0:
            return fail("C compiler and Python.h", out.stderr.strip()[-300:])
    return ok("C compiler and Python.h", f"cc compiles against {include}/Python.h")


def step_modules(component_source: str) -> list[str]:
    """The modules a component's function imports (its imports live inside the function, run in the image)."""
    found = []
    for node in ast.walk(ast.parse(component_source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return sorted(set(found))


def steps_check(image: str, importer=importlib.import_module) -> list[Check]:
    """medrl, kfp and every component that runs on this image import, with all that its function imports."""
    checks = []
    for name in ("medrl", "kfp"):
        try:
            importer(name)
            checks.append(ok(name, f"imports, version {md.version(name)}"))
        except Exception as err:
            checks.append(fail(name, f"{type(err).__name__}: {err}"[:300]))
    for component, runs_on in COMPONENTS.items():
        if image == "slim" and runs_on != "slim":
            continue
        module = f"medrl.components.{component}"
        try:
            spec = importlib.util.find_spec(module)
            source = Path(spec.origin).read_text() if spec and spec.origin else None
            if source is None:
                raise ImportError(f"no module {module}")
            modules = step_modules(source)
            for name in [module, *modules]:
                importer(name)
        except Exception as err:
            checks.append(fail(f"step {component}", f"{type(err).__name__}: {err}"[:300]))
            continue
        checks.append(ok(f"step {component}", "imports " + ", ".join(m for m in modules if m.startswith("medrl"))))
    return checks


def tiny_models_check(has_torchvision: bool) -> Check:
    """The demo's `tiny:` bases are built at init with Qwen2-VL's processor, whose video processor needs
    torchvision; the slim image leaves torchvision out (its CPU build must match the CPU torch's)."""
    if has_torchvision:
        return ok("tiny models", "torchvision present: init can build the demo's tiny: bases")
    return Check(
        "tiny models",
        "n/a",
        "no torchvision in this image: init cannot build the demo's tiny: bases here; "
        "run init on the train image (medrl pipeline compile --image TRAIN_IMAGE)",
    )


# vLLM (0.33) builds its argument parser's defaults from a DeviceConfig, which needs a detected GPU: without one,
# `--help` stops inside the parser's construction with this message, after every module of the server imported.
NO_DEVICE = "Failed to infer device type"
PARSER_FRAME = "make_arg_parser"


def vllm_server_check(python: str = sys.executable, gpu: bool | None = None) -> Check:
    """vLLM's OpenAI server entrypoint gets as far as parsing its arguments (on a machine without a GPU: as far as
    building its parser, which needs one; said as n/a, any other failure fails)."""
    gpu = Path("/dev/nvidiactl").exists() if gpu is None else gpu
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--help"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return fail("vLLM server", "`--help` did not answer within 300 s")
    if out.returncode == 0 and "--model" in out.stdout:
        return ok("vLLM server", "api_server parses its arguments (--help lists --model)")
    if not gpu and NO_DEVICE in out.stderr and PARSER_FRAME in out.stderr:
        return Check(
            "vLLM server",
            "n/a",
            "api_server imported and reached make_arg_parser; vLLM needs a GPU to build the parser's defaults, "
            "and this machine has none (on a GPU node the same check parses --help)",
        )
    return fail("vLLM server", f"exit {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}")


def image_checks(image: str) -> list[Check]:
    if image not in IMAGES:
        raise ValueError(f"unknown image {image!r}: one of {', '.join(IMAGES)}")
    checks = [user_check(os.getuid(), os.getgid()), cache_dirs_check(dict(os.environ)), tmp_check()]
    declared = os.environ.get("MEDRL_IMAGE")
    if declared != image:
        checks.append(fail("image", f"this image declares MEDRL_IMAGE={declared}, not {image}"))
        return checks
    if image == "judge":
        checks.append(vllm_server_check())
    else:
        pins = read_lock(LOCK.read_text()) if LOCK.is_file() else {}
        checks.append(lock_check(pins, {_norm(d.metadata["Name"]): d.version for d in md.distributions()}))
        checks += steps_check(image)
        if image == "slim":
            checks.append(tiny_models_check(importlib.util.find_spec("torchvision") is not None))
        if image.startswith("train"):
            checks += stack_checks(image, pins, flash_attn_built=os.environ.get("MEDRL_FLASH_ATTN") != "0")
            if image == "train":
                checks.append(compiler_check())
            else:
                checks.append(Check("C compiler and Python.h", "n/a", "not part of the CPU variant (Triton: GPU only)"))
    # Last: the imports above ran with this file system, so a library that wrote outside /tmp failed already.
    checks.append(no_writes_check())
    return checks


def report(checks: list[Check], echo=print) -> int:
    """Print each check; 1 when any failed."""
    for check in checks:
        echo(f"[{check.status:<4}] {check.name}: {check.detail}")
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def _under(path: str, folder: str) -> bool:
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":  # the judge image: `python -c "$(cat image_check.py)" judge`
    sys.exit(report(image_checks(sys.argv[1] if len(sys.argv) > 1 else "")))
