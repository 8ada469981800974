"""Builds medrl's images with docker or podman (`make images`, `make wheelhouse`, `make standin-base`).

    python containers/build.py images [--engine podman] [--targets slim,train,judge] [--wheelhouse] [--arg K=V ...]
    python containers/build.py wheelhouse [--images slim,train-cpu]
    python containers/build.py standin-base
    python containers/build.py check --target slim --tag IMAGE

Standard library only, so a build machine needs no medrl environment to build images. Every engine call has a
timeout: an engine that cannot run fails with a message, never a hang.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "containers" / "containers.conf"
WHEELHOUSE = ROOT / "wheelhouse"
CHECK_SOURCE = ROOT / "src" / "medrl" / "image_check.py"
# A python:3.11-slim stand-in made from Debian packages, for machines that cannot pull from Docker Hub (named as a
# stand-in: it is Debian bookworm's python3.11, not the python image's own build).
STANDIN = "localhost/medrl-standin-python:3.11"
STANDIN_PACKAGES = "python3.11,python3.11-venv,python3-pip"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The base-image build arguments each target's stages start from.
BASES = {
    "slim": ("PYTHON_IMAGE",),
    "train-cpu": ("PYTHON_IMAGE",),
    "train": ("CUDA_DEVEL_IMAGE", "CUDA_RUNTIME_IMAGE", "PYTHON_IMAGE"),
    "judge": ("CUDA_RUNTIME_IMAGE",),
}
# Each image's wheelhouse folder and the lock it holds (judge: vLLM and what it resolves to; it has no lock).
LOCKS = {
    "slim": "requirements-slim.lock",
    "train-cpu": "requirements.lock",
    "train": "requirements-gpu.lock",
    "judge": None,
}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
REGISTRY = "ghcr.io/medrl"  # where medrl.kfp.parameters.DEFAULT_IMAGE and DEFAULT_SLIM_IMAGE live
ENGINE_TIMEOUT = 120  # an engine query (info, image exists, pull)
BUILD_TIMEOUT = 3 * 3600
CHECK_TIMEOUT = 900


class BuildError(Exception):
    """A failure with what to do about it; main() prints it as one line and exits 2."""


def engine_env(engine: str) -> dict[str, str]:
    env = dict(os.environ)
    if Path(engine).name == "podman":
        env.setdefault("CONTAINERS_CONF", str(CONF))
    return env


def find_engine(wanted: str | None = None) -> str:
    """docker or podman, whichever is installed and answers (docker first); `wanted` names one. A docker client
    without a daemon does not count when podman works."""
    names = [wanted] if wanted else ["docker", "podman"]
    installed = [path for name in names if (path := shutil.which(name))]
    if not installed:
        if wanted:
            raise BuildError(f"container engine {wanted!r} not found: install it, or leave ENGINE unset to use any")
        raise BuildError("neither docker nor podman is installed: install one (Debian: apt-get install podman runc)")
    reasons = []
    for path in installed:
        reason = engine_problem(path)
        if reason is None:
            return path
        reasons.append(f"{Path(path).name}: {reason}")
    raise BuildError(f"no container engine can run here ({'; '.join(reasons)}); podman: see containers/containers.conf")


def run(cmd: list[str], timeout: float, what: str, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as err:
        raise BuildError(f"{what} did not finish within {timeout:.0f} s: {' '.join(cmd[:4])} ...") from err


def engine_problem(engine: str) -> str | None:
    """Why `engine info` fails (its last line of errors), or None when the engine answers."""
    try:
        out = run(
            [engine, "info"], ENGINE_TIMEOUT, f"`{Path(engine).name} info`", env=engine_env(engine), capture_output=True
        )
    except BuildError as err:
        return str(err)
    if out.returncode == 0:
        return None
    return (out.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]


def dockerfile_args(dockerfile: Path = ROOT / "Dockerfile") -> dict[str, str]:
    """The Dockerfile's global ARG defaults (before the first FROM), ${...} expanded."""
    found: dict[str, str] = {}
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            break
        if m := re.match(r"ARG (\w+)=(.*)$", line):
            value = m.group(2).strip().strip('"')
            found[m.group(1)] = re.sub(r"\$\{(\w+)\}", lambda v: found.get(v.group(1), ""), value)
    return found


def base_images(target: str, build_args: dict[str, str]) -> dict[str, str]:
    """Build argument -> the image it names, for the stages `target` builds from."""
    defaults = dockerfile_args()
    return {arg: build_args.get(arg, defaults[arg]) for arg in BASES[target]}


def image_present(engine: str, image: str) -> bool:
    cmd = [engine, "image", "exists", image] if Path(engine).name == "podman" else [engine, "image", "inspect", image]
    out = run(cmd, ENGINE_TIMEOUT, "the image query", env=engine_env(engine), capture_output=True)
    return out.returncode == 0


def ensure_bases(engine: str, target: str, build_args: dict[str, str], pull: bool = True) -> None:
    """Every base `target` needs is present (pulled when it can be), else a message naming it and its argument."""
    for arg, image in base_images(target, build_args).items():
        if image_present(engine, image):
            continue
        if pull:
            try:
                out = run([engine, "pull", image], ENGINE_TIMEOUT, "pull", env=engine_env(engine), capture_output=True)
                if out.returncode == 0:
                    continue
            except BuildError:
                pass
        raise BuildError(
            f"base image {image} is not present and cannot be pulled: pull or load it, or set the build argument "
            f"{arg} to an image that is (make images {arg}=IMAGE)"
        )


def build(
    engine: str,
    target: str,
    tag: str,
    build_args: dict[str, str],
    wheelhouse: bool = False,
    offline: bool = False,
) -> float:
    """Build one target; returns the seconds it took. `offline`: no network inside the build (needs the wheelhouse)."""
    ensure_bases(engine, target, build_args, pull=not offline)
    args = dict(build_args)
    if wheelhouse:
        missing = [n for n in needed_wheelhouses(target) if not wheelhouse_ready(n)]
        if missing:
            raise BuildError(f"wheelhouse/{missing[0]} is not complete: run `make wheelhouse` first")
        args["WHEELHOUSE"] = "1"
    WHEELHOUSE.mkdir(exist_ok=True)  # the Dockerfile bind-mounts it
    cmd = [engine, "build", "--target", target, "-t", tag, "-f", str(ROOT / "Dockerfile")]
    if offline:
        cmd += ["--network", "none"]
    if Path(engine).name == "podman":
        # docker format: the OCI format drops SHELL (bash with pipefail), and podman's RUN would use /bin/sh.
        cmd += ["--layers", "--format", "docker"]
    for key, value in sorted(args.items()):
        cmd += ["--build-arg", f"{key}={value}"]
    start = time.monotonic()
    out = run([*cmd, str(ROOT)], BUILD_TIMEOUT, f"building {target}", env=engine_env(engine))
    if out.returncode != 0:
        raise BuildError(f"building {target} failed (exit {out.returncode}): the build output above says why")
    return time.monotonic() - start


def image_tag(registry: str, target: str) -> str:
    """The tag `make images` gives a target: with the default registry, the very names the pipeline and `medrl run
    --runner container` use by default (medrl.kfp.parameters), so a built image is found without --image."""
    return f"{registry}/medrl:0.1.0" if target == "train" else f"{registry}/medrl-{target}:0.1.0"


def needed_wheelhouses(target: str) -> list[str]:
    # The wheel stage takes its build backend from the slim wheelhouse.
    return sorted({"slim", target})


def fill_wheelhouses(target: str, torch_index: str | None = TORCH_CPU_INDEX) -> list[str]:
    """Every wheelhouse a `--wheelhouse` build of TARGET reads (its own and the slim one); returns those downloaded."""
    return [name for name in needed_wheelhouses(target) if fill_wheelhouse(name, torch_index=torch_index)]


def lock_digest(name: str) -> str:
    lock = LOCKS[name]
    text = (ROOT / lock).read_text() if lock else judge_requirement()
    return hashlib.sha256(text.encode()).hexdigest()


def judge_requirement() -> str:
    (version,) = re.findall(r"^ARG VLLM_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    return f"vllm=={version}"


def wheelhouse_ready(name: str) -> bool:
    stamp = WHEELHOUSE / name / ".complete"
    return stamp.is_file() and stamp.read_text().strip() == lock_digest(name)


def fill_wheelhouse(name: str, python: str = sys.executable, torch_index: str | None = TORCH_CPU_INDEX) -> bool:
    """Download (and build, for sdists such as DeepSpeed's) every wheel of one image's lock into wheelhouse/NAME.
    Skipped when it is complete for the lock as it is now; returns whether it downloaded."""
    if wheelhouse_ready(name):
        return False
    if sys.version_info[:2] != (3, 11) and python == sys.executable:
        raise BuildError("the wheelhouse is for the images' Python 3.11: run this with a Python 3.11")
    out = WHEELHOUSE / name
    partial = WHEELHOUSE / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    lock = LOCKS[name]
    pip = [python, "-m", "pip"]
    steps: list[tuple[list[str], dict[str, str] | None]] = []  # (command, environment)
    if lock:
        # The locks pin every package, so no dependency resolution: each pin as a wheel, sdists built into wheels.
        # `===` (the exact string): `torch==2.13.0` would also take a local build such as 2.13.0+cpu from find-links.
        lines = (ROOT / lock).read_text().splitlines()
        pins = [re.sub(r"^([\w.-]+)==", r"\1===", ln) for ln in lines if not ln.startswith("flash-attn==")]
        listed = partial / ".requirements.txt"
        listed.write_text("\n".join(pins) + "\n")
        cmd = [*pip, "wheel", "--no-deps", "--wheel-dir", str(partial), "-r", str(listed)]
        if name == "slim" and torch_index:
            cmd += ["--extra-index-url", torch_index]
        steps.append((cmd, None))
        if name == "train":
            # flash-attn stays a source archive (the Dockerfile's flash-attn stage compiles it with nvcc), with the
            # tools that stage installs; reading its metadata imports torch, so no build isolation here.
            (version,) = [
                ln.split("==")[1] for ln in (ROOT / lock).read_text().splitlines() if ln.startswith("flash-attn==")
            ]
            fetch = [*pip, "download", "--no-deps", "--dest", str(partial)]
            sdist = [*fetch, "--no-binary", ":all:", "--no-build-isolation", f"flash-attn=={version}"]
            steps.append((sdist, {**os.environ, "FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE"}))
            steps.append(([*fetch, "-c", str(ROOT / lock), "setuptools", "wheel", "ninja", "psutil", "einops"], None))
    else:
        steps.append(([*pip, "wheel", "--wheel-dir", str(partial), judge_requirement()], None))
    for cmd, env in steps:
        result = run(cmd, BUILD_TIMEOUT, f"the {name} wheelhouse", env=env)
        if result.returncode != 0:
            raise BuildError(
                f"the {name} wheelhouse failed (pip exit {result.returncode}): pip's output above says why"
            )
    (partial / ".complete").write_text(lock_digest(name) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return True


def make_standin(engine: str, tag: str = STANDIN, mirror: str = DEBIAN_MIRROR) -> bool:
    """Import a Debian bookworm root with Python 3.11 as `tag` (a stand-in for python:3.11-slim); skipped when the
    tag exists. Returns whether it was made."""
    if image_present(engine, tag):
        return False
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise BuildError("the stand-in base needs debootstrap: apt-get install debootstrap (as root)")
    with tempfile.TemporaryDirectory(prefix="medrl-standin-") as tmp:
        root = Path(tmp, "root")
        out = run(
            [debootstrap, "--variant=minbase", f"--include={STANDIN_PACKAGES}", "bookworm", str(root), mirror],
            1800,
            "debootstrap",
            capture_output=True,
        )
        if out.returncode != 0:
            tail = out.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise BuildError(f"debootstrap failed: {tail[0]}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = run(
                [engine, "import", "-", tag], 900, "the image import", stdin=tar.stdout, env=engine_env(engine)
            )
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait(timeout=60)
        if imported.returncode != 0 or tar.returncode != 0:
            raise BuildError(f"importing the stand-in base as {tag} failed")
    return True


def self_check_command(engine: str, target: str, tag: str) -> list[str]:
    """Run the image's self-check as the pods run it: UID 1000, read-only root, /tmp writable, no network."""
    cmd = [engine, "run", "--rm", "--user", "1000:1000", "--read-only", "--tmpfs", "/tmp", "--network", "none", tag]
    if target == "judge":  # no medrl in the judge image: the check's own source, run by vLLM's Python
        return [*cmd, "/opt/vllm/bin/python", "-c", CHECK_SOURCE.read_text(), "judge"]
    return [*cmd, "medrl", "doctor", "--image", target]


def self_check(engine: str, target: str, tag: str) -> subprocess.CompletedProcess:
    return run(
        self_check_command(engine, target, tag),
        CHECK_TIMEOUT,
        f"the {target} self-check",
        env=engine_env(engine),
        capture_output=True,
        text=True,
    )


def image_size(engine: str, tag: str) -> int:
    out = run(
        [engine, "image", "inspect", "--format", "{{.Size}}", tag],
        ENGINE_TIMEOUT,
        "the image query",
        env=engine_env(engine),
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip() or 0)


def _build_args(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BuildError(f"--arg {pair!r}: give KEY=VALUE")
        found[key] = value
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="containers/build.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images", help="build the images")
    images.add_argument("--engine", default=os.environ.get("ENGINE") or None)
    images.add_argument("--targets", default="slim,train,judge")
    images.add_argument(
        "--registry",
        default=REGISTRY,
        help=f"tags: REGISTRY/medrl:0.1.0 (train), REGISTRY/medrl-TARGET:0.1.0; default {REGISTRY}, the pipeline's",
    )
    images.add_argument("--wheelhouse", action="store_true", help="install from wheelhouse/ only (pip --no-index)")
    images.add_argument("--offline", action="store_true", help="no network inside the build (needs --wheelhouse)")
    images.add_argument("--arg", action="append", default=[], help="a build argument, KEY=VALUE")
    wheels = sub.add_parser("wheelhouse", help="download every locked wheel into wheelhouse/IMAGE")
    wheels.add_argument("--images", default="slim,train-cpu,train,judge")
    wheels.add_argument("--torch-cpu-index", default=TORCH_CPU_INDEX, help="empty: none (torch from pip's config)")
    standin = sub.add_parser("standin-base", help=f"make {STANDIN} from Debian packages (skipped when present)")
    standin.add_argument("--engine", default=os.environ.get("ENGINE") or None)
    check = sub.add_parser("check", help="run an image's self-check")
    check.add_argument("--engine", default=os.environ.get("ENGINE") or None)
    check.add_argument("--target", required=True, choices=sorted(BASES))
    check.add_argument("--tag", required=True)
    ns = parser.parse_args(argv)
    try:
        if ns.command == "wheelhouse":
            names = ns.images.split(",")
            for name in names:
                if name not in LOCKS:
                    raise BuildError(f"unknown image {name!r}: one of {', '.join(LOCKS)}")
            for name in sorted({needed for image in names for needed in needed_wheelhouses(image)}):
                start = time.monotonic()
                did = fill_wheelhouse(name, torch_index=ns.torch_cpu_index or None)
                done = f"{time.monotonic() - start:.0f} s" if did else "already complete"
                print(f"wheelhouse/{name}: {done}")
            return 0
        engine = find_engine(ns.engine)
        if ns.command == "standin-base":
            print(f"{STANDIN}: {'made' if make_standin(engine) else 'present'}")
            return 0
        if ns.command == "check":
            out = self_check(engine, ns.target, ns.tag)
            print(out.stdout, end="")
            print(out.stderr, end="", file=sys.stderr)
            return out.returncode
        if ns.offline and not ns.wheelhouse:
            raise BuildError("--offline needs --wheelhouse: without an index pip installs only from wheelhouse/")
        targets = ns.targets.split(",")
        for target in targets:
            if target not in BASES:
                raise BuildError(f"unknown target {target!r}: one of {', '.join(BASES)}")
        build_args = _build_args(ns.arg)
        for target in targets:  # every base checked before anything is built
            ensure_bases(engine, target, build_args, pull=not ns.offline)
        for target in targets:
            tag = image_tag(ns.registry, target)
            took = build(engine, target, tag, build_args, ns.wheelhouse, ns.offline)
            print(f"{tag}: built in {took:.0f} s, {image_size(engine, tag) / 1e9:.2f} GB")
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
