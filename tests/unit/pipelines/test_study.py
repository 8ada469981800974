"""The compiled study (pipelines/compiled/study.yaml, kept current by tests/integration/test_pipeline.py) as the
oldest Kubeflow Pipelines backend medrl supports reads it: every task's Kubernetes settings must be fields that
backend knows, since its API server unmarshals them strictly when it turns a run into an Argo workflow and a field
it does not know fails the run at creation (checked against that release's own schema, vendored in tests/data)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPILED = ROOT / "pipelines" / "compiled" / "study.yaml"
KFP_FLOOR = "2.15.0"  # README: "Kubeflow Pipelines 2.15 or later"
SCHEMA = ROOT / "tests" / "data" / f"kfp-backend-{KFP_FLOOR}" / "kubernetes_executor_config.proto"
FIELD = re.compile(r"^\s*(?:repeated\s+|optional\s+)?(map\s*<[^>]*>|[\w.]+)\s+(\w+)\s*=\s*\d+")


def json_name(field: str) -> str:
    first, *rest = field.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def messages(proto: str) -> dict[str, dict[str, str]]:
    """{message name (nested ones as Outer.Inner): {field's JSON name: its type}} of a proto3 file."""
    out: dict[str, dict[str, str]] = {}
    scope: list[tuple[str, str]] = []  # the open blocks: (message | oneof | enum, name)
    for line in re.sub(r"//[^\n]*", "", proto).splitlines():
        opened = re.match(r"^\s*(message|oneof|enum)\s+(\w+)\s*\{", line)
        if opened:
            scope.append((opened.group(1), opened.group(2)))
            if opened.group(1) == "message":
                out[".".join(name for kind, name in scope if kind == "message")] = {}
        elif re.match(r"^\s*}", line):
            scope.pop()
        elif (field := FIELD.match(line)) and scope and scope[-1][0] != "enum":
            owner = ".".join(name for kind, name in scope if kind == "message")  # a oneof's fields are its message's
            out[owner][json_name(field.group(2))] = field.group(1)
    return out


def unknown_fields(value, message: str, schema: dict[str, dict[str, str]], where: str) -> list[str]:
    """Paths of keys in `value` that the message (and the messages of its fields, in this file) lacks."""
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in unknown_fields(item, message, schema, f"{where}[{i}]")]
    if not isinstance(value, dict):
        return []
    fields, found = schema[message], []
    for key, item in value.items():
        if key not in fields:
            found.append(f"{where}.{key}")
            continue
        kind = fields[key]
        # A nested message first (SecretAsEnv.SecretKeyToEnvMap), then one of the file; others (pipeline_spec's
        # InputParameterSpec, maps, scalars) are not this file's to check.
        for candidate in (f"{message}.{kind}", kind):
            if candidate in schema:
                found += unknown_fields(item, candidate, schema, f"{where}.{key}")
                break
    return found


def test_the_floor_schema_is_read_whole():
    schema = messages(SCHEMA.read_text())
    config = schema["KubernetesExecutorConfig"]
    assert {"secretAsEnv", "configMapAsEnv", "nodeSelector", "tolerations", "emptyDirMounts", "podMetadata"} <= set(
        config
    )
    assert config["secretAsEnv"] == "SecretAsEnv" and "optional" in schema["SecretAsEnv"]
    assert schema["SecretAsEnv.SecretKeyToEnvMap"] == {"secretKey": "string", "envVar": "string"}
    assert {"constant", "pvcNameParameter"} <= set(schema["PvcMount"])  # a oneof's fields are its message's
    assert "securityContext" not in config  # kfp-kubernetes 2.17's set_security_context: backend 2.16 on


def test_every_task_s_kubernetes_settings_are_known_to_the_oldest_supported_backend():
    schema = messages(SCHEMA.read_text())
    _spec, platform = yaml.safe_load_all(COMPILED.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors, "the compiled study carries no Kubernetes settings"
    unknown = [
        p for name, cfg in executors.items() for p in unknown_fields(cfg, "KubernetesExecutorConfig", schema, name)
    ]
    assert not unknown, (
        f"Kubeflow Pipelines {KFP_FLOOR} refuses to start a run of this pipeline (unknown field(s) {unknown}): drop "
        "the kfp-kubernetes call that writes them, or raise the floor in README and tests/data"
    )
