"""medrl as a user installs it: the wheel, built from this checkout, installed into a fresh environment outside it
(reusing this environment's dependencies), compiles the pipeline for a given image from an empty folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from (the Dockerfile's wheel stage copies the same).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "src", "components", "pipelines")
IMAGE = "registry.hospital.internal/medrl/medrl:9.9.9"


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources, so the build leaves nothing in the checkout (build/, *.egg-info)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, tree / name)
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: setuptools comes from this environment, so the test needs no index.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(tree)])
    (whl,) = dist.glob("medrl-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A venv with only medrl installed; a .pth adds this environment's site-packages for the dependencies (plain
    path lines: the editable install of this checkout that lives there is not activated)."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    dependencies = [p for p in sys.path if p.endswith("site-packages")]  # this venv's, and any it reuses itself
    (site / "dependencies.pth").write_text("".join(f"{p}\n" for p in dependencies))
    # --ignore-installed: this environment's editable medrl, seen through the .pth, must not count as installed.
    pip = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--no-deps",
        "--no-index",
        "--ignore-installed",
    ]
    run([*pip, "-q", str(wheel)])
    return python


def test_wheel_holds_the_pipeline_components_and_presets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "medrl/presets/demo.yaml",
        "medrl/train/configs/zero2.json",
        "medrl/components/train.py",
        "medrl/components/start.py",
        "medrl/pipelines/study.py",
        "medrl/pipelines/compiled/study.yaml",
    }
    assert expected <= names
    assert not any(n.startswith(("components/", "pipelines/")) for n in names), "no top-level package of those names"


def test_installed_wheel_compiles_the_pipeline_outside_the_checkout(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # tests/conftest.py points it at the checkout
    where = run(
        [str(installed), "-c", "import medrl.components, medrl.pipelines; print(medrl.pipelines.__file__)"],
        cwd=tmp_path,
        env=env,
    )
    assert not Path(where.stdout.strip()).is_relative_to(ROOT), "imported from the checkout, not the wheel"
    out = run(
        [str(installed), "-m", "medrl", "pipeline", "compile", "--image", IMAGE, "--out", "study.yaml"],
        cwd=tmp_path,
        env=env,
    )
    assert "study.yaml" in out.stdout
    spec, _platform = yaml.safe_load_all((tmp_path / "study.yaml").read_text())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {IMAGE}
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == IMAGE
    # `pipeline submit|schedule` without --package send the compiled pipeline the wheel ships.
    shipped = run(
        [str(installed), "-c", "from medrl.kfp.parameters import packaged_pipeline; print(packaged_pipeline())"],
        cwd=tmp_path,
        env=env,
    )
    assert not Path(shipped.stdout.strip()).is_relative_to(ROOT)
    assert Path(shipped.stdout.strip()).read_text() == (ROOT / "pipelines" / "compiled" / "study.yaml").read_text()
