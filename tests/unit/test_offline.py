"""The test session is offline whatever the developer's environment says (tests/conftest.py forces it)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_developers_online_setting_does_not_reach_the_tests(tmp_path):
    """pytest run with HF_HUB_OFFLINE=0 in its environment, the project's conftest loaded: inside the session,
    Hugging Face is offline."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import os\n"
        "import huggingface_hub.constants\n"
        "def test_probe():\n"
        "    assert os.environ['HF_HUB_OFFLINE'] == '1'\n"
        "    assert huggingface_hub.constants.HF_HUB_OFFLINE is True\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(probe)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
