"""The openai judge against the judge image's pinned vLLM (pyproject's `judge` extra), read from its wheel: the
flags k8s/base/judge.yaml starts `vllm serve` with exist, and every field of the request bodies medrl sends is one
the server declares. vLLM's request models accept unknown fields silently (`extra="allow"`; since the guided_* fields
were removed they only log a warning), so a renamed field would give unconstrained judge replies, not an error.

Set MEDRL_VLLM_JUDGE_WHEEL to the wheel (`pip download --no-deps vllm==<judge pin>`); skipped without it.
"""

from __future__ import annotations

import ast
import os
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from medrl.config import OpenAIJudgeConfig
from medrl.judge.openai import OpenAIJudge

ROOT = Path(__file__).resolve().parents[3]


def _wheel() -> zipfile.ZipFile:
    wheel = os.environ.get("MEDRL_VLLM_JUDGE_WHEEL")
    if not wheel:
        pytest.skip("no vLLM wheel here: set MEDRL_VLLM_JUDGE_WHEEL to the judge image's vLLM wheel")
    pin = re.search(r'"vllm==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin, "pyproject.toml pins the judge's vLLM"
    assert f"vllm-{pin.group(1)}-" in Path(wheel).name, f"MEDRL_VLLM_JUDGE_WHEEL is not vllm {pin.group(1)}"
    return zipfile.ZipFile(wheel)


def _fields(source: str, *classes: str) -> set[str]:
    """Names annotated in the bodies of `classes` (pydantic fields, dataclass fields)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name in classes:
            names |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return names


def _serve_flags() -> list[str]:
    docs = list(yaml.safe_load_all((ROOT / "k8s/base/judge.yaml").read_text()))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "serve"
    return [arg.split("=", 1)[0] for arg in container["args"] if arg.startswith("--")]


def test_the_judge_server_flags_exist_in_the_pinned_vllm():
    with _wheel() as whl:
        engine = whl.read("vllm/engine/arg_utils.py").decode()
        frontend = _fields(whl.read("vllm/entrypoints/common/cli_args.py").decode(), "BaseFrontendArgs", "FrontendArgs")
    flags = _serve_flags()
    assert "--served-model-name" in flags and "--max-model-len" in flags
    # Engine flags are added by name; the server's own (host, port, ...) from FrontendArgs' fields.
    unknown = [f for f in flags if f'"{f}"' not in engine and f[2:].replace("-", "_") not in frontend]
    assert not unknown, f"vllm serve has no such flags: {unknown}"


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_every_field_medrl_sends_is_one_the_pinned_vllm_reads(endpoint):
    with _wheel() as whl:
        chat = whl.read("vllm/entrypoints/openai/chat_completion/protocol.py").decode()
        completion = whl.read("vllm/entrypoints/openai/completion/protocol.py").decode()
        sampling = whl.read("vllm/sampling_params.py").decode()
    declared = (
        _fields(chat, "ChatCompletionRequest") if endpoint == "chat" else _fields(completion, "CompletionRequest")
    )
    judge = OpenAIJudge(OpenAIJudgeConfig(url="http://127.0.0.1:9", model="BioMistral-7B", endpoint=endpoint))
    body = judge._body("Is the reasoning sound?", ("Yes", "No"))
    assert set(body) - declared == set(), "fields the server would ignore"
    # The default guidance: its keys are StructuredOutputsParams' fields, so the reply is held to the choices.
    assert set(body["structured_outputs"]) <= _fields(sampling, "StructuredOutputsParams")
