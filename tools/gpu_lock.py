"""The GPU image's locked environment: `requirements-gpu.lock` pins one environment for linux x86_64 / CPython 3.11
(the image's Ubuntu 24.04) in which torch, transformers, TRL, vLLM (inside TRL's supported range), DeepSpeed and
flash-attn resolve together with the rest of medrl's dependencies.

It is resolved with pip's own resolver against PyPI without installing anything (`pip install --dry-run
--report`, binary wheels for the target platform), from pyproject's dependencies with the overrides in
`requirements-gpu.in` (vLLM pins its own torch, so the GPU stack cannot take the CPU pins as they are). Its header
carries a digest of those inputs, so a test sees, offline, when pyproject or the overrides changed since the lock
was made. Regenerate: `make lock-gpu` (python -m tools.gpu_lock).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = "requirements-gpu.lock"
OVERRIDES = "requirements-gpu.in"
PYTHON = "3.11"
GLIBC_MINOR = 39  # Ubuntu 24.04, the image's base: wheels for glibc 2.39 and older run there
INDEX = "https://pypi.org/simple"
# On PyPI as source only: pip cannot read their requirements for another platform without building them, so the
# dry run sees a metadata-only wheel carrying the requirements the same version declares in this (CPU) environment.
FROM_SOURCE = ("deepspeed", "kfp-server-api")
# Not resolved at all: no wheel on PyPI, and building it needs CUDA; the Dockerfile's build stage compiles the
# pinned version against the locked torch.
BUILT_IN_IMAGE = ("flash-attn",)
DIGEST = re.compile(r"^# inputs sha256: ([0-9a-f]{64})$", re.M)


def _requirements(lines: list[str]) -> list[Requirement]:
    return [Requirement(line) for line in (raw.split("#", 1)[0].strip() for raw in lines) if line]


def inputs(root: Path) -> list[Requirement]:
    """pyproject's dependencies and `gpu` extra, each replaced by the override of the same name where there is one,
    plus the overrides that are new (vLLM)."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _requirements(project["dependencies"] + project.get("optional-dependencies", {}).get("gpu", []))
    overrides = _requirements((root / OVERRIDES).read_text(encoding="utf-8").splitlines())
    by_name = {canonicalize_name(r.name): r for r in overrides}
    merged = [by_name.pop(canonicalize_name(r.name), r) for r in declared]
    return merged + list(by_name.values())


def inputs_digest(root: Path) -> str:
    """What the lock was resolved from, including the target platform: any change means `make lock-gpu`."""
    text = "\n".join(sorted(str(r) for r in inputs(root)))
    text += f"\npython {PYTHON} glibc 2.{GLIBC_MINOR} source {','.join(FROM_SOURCE)} image {','.join(BUILT_IN_IMAGE)}"
    return hashlib.sha256(text.encode()).hexdigest()


def platforms() -> list[str]:
    # pip does not widen an explicit --platform to older glibc versions: every compatible tag is named.
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 4, -1)]
    return [*tags, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def metadata_wheel(name: str, folder: Path) -> Path:
    """A wheel holding only the installed distribution's metadata (name, version, requirements), for the resolver."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise RuntimeError(f"{name} must be installed here to read its requirements; `make install` first") from None
    stem = f"{canonicalize_name(name).replace('-', '_')}-{dist.version}"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {dist.version}"]
    meta += [f"Requires-Dist: {r}" for r in dist.requires or []]
    info = f"{stem}.dist-info"
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{info}/METADATA", "\n".join(meta) + "\n")
        whl.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: medrl\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{info}/RECORD", "")
    return path


def resolve(requirements: list[Requirement]) -> dict[str, str]:
    """{name: version} of everything pip would install for `requirements` on the target platform (nothing is
    installed; needs PyPI). Local pip configuration (constraints, mirrors) is ignored: the lock is PyPI's answer."""
    skip = {canonicalize_name(n) for n in BUILT_IN_IMAGE}
    wanted = [str(r) for r in requirements if canonicalize_name(r.name) not in skip]
    with tempfile.TemporaryDirectory() as tmp:
        stubs = Path(tmp) / "stubs"
        stubs.mkdir()
        for name in FROM_SOURCE:
            metadata_wheel(name, stubs)
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        cmd += ["--report", str(report), "--python-version", PYTHON, "--implementation", "cp"]
        cmd += [arg for tag in platforms() for arg in ("--platform", tag)]
        cmd += ["--only-binary=:all:", "--index-url", INDEX, "--find-links", str(stubs), *wanted]
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")
        }
        env["PIP_CONFIG_FILE"] = os.devnull
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the GPU environment does not resolve:\n{done.stderr.strip()}")
        installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def render(pins: dict[str, str], requirements: list[Requirement], digest: str) -> str:
    for req in requirements:
        if canonicalize_name(req.name) in {canonicalize_name(n) for n in BUILT_IN_IMAGE}:
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = spec.version
    cuda = pins.get("nvidia-cuda-runtime") or pins.get("nvidia-cuda-runtime-cu12") or "?"
    header = (
        f"# medrl's GPU environment (linux x86_64, CPython {PYTHON}, glibc 2.{GLIBC_MINOR}):\n"
        f"# torch {pins['torch']} with CUDA {cuda} libraries, transformers {pins['transformers']}, "
        f"trl {pins['trl']}, vllm {pins['vllm']}.\n"
        "# Generated by `make lock-gpu` from pyproject.toml and requirements-gpu.in; flash-attn is built by the\n"
        "# Dockerfile's build stage against the locked torch.\n"
        f"# inputs sha256: {digest}\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()) if name != "medrl")


def locked_digest(path: Path) -> str | None:
    found = DIGEST.search(Path(path).read_text(encoding="utf-8"))
    return found.group(1) if found else None


def main(root: Path | None = None) -> Path:
    root = root or Path(__file__).resolve().parents[3]
    requirements = inputs(root)
    text = render(resolve(requirements), requirements, inputs_digest(root))
    out = root / LOCK
    tmp = out.with_name(f".{LOCK}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
