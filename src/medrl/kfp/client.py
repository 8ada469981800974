"""Kubeflow Pipelines API: start a run of the compiled study, schedule a recurring one, list runs.

Arguments are checked against the package's own parameter list and types before anything is sent.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from medrl.errors import MedrlError

# KFP's cron (robfig/cron) has six fields, seconds first: `0 0 2 * * 0` is Sundays at 02:00:00.
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
CRON_FIELDS = [
    ("seconds", 0, 59, {}),
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(MONTHS)}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(WEEKDAYS)}),
]
CRON_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
MAX_CONCURRENCY = 10  # the KFP API server refuses more


class KubeflowError(MedrlError, ValueError):
    """Bad input for the Kubeflow Pipelines API; the message names the option and the fix."""


def validate_cron(expr: str) -> str:
    """Check a KFP cron expression; returns it normalised (single spaces).

    >>> validate_cron("0 0 2 * * 0")
    '0 0 2 * * 0'
    """
    text = " ".join(expr.split())
    if text in CRON_DESCRIPTORS or text.startswith("@every "):
        return text
    parts = text.split(" ")
    if len(parts) == 5:
        raise KubeflowError(
            f"--cron {expr!r} has 5 fields; Kubeflow's cron has 6, seconds first: try --cron '0 {text}'"
        )
    if len(parts) != 6:
        raise KubeflowError(f"--cron {expr!r}: give 6 fields (seconds minutes hours day-of-month month day-of-week)")
    for part, (name, low, high, names) in zip(parts, CRON_FIELDS, strict=True):
        _check_cron_field(expr, part, name, low, high, names)
    return text


def _check_cron_field(expr: str, part: str, name: str, low: int, high: int, names: dict[str, int]) -> None:
    def value(token: str) -> int:
        upper = token.upper()
        if upper in names:
            return names[upper]
        if not token.isdigit():
            raise KubeflowError(f"--cron {expr!r}: {name} field {part!r} has {token!r}, not a number")
        number = int(token)
        if not low <= number <= high:
            raise KubeflowError(f"--cron {expr!r}: {name} must be within {low}-{high}, got {number}")
        return number

    for item in part.split(","):
        base, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise KubeflowError(f"--cron {expr!r}: {name} step {step!r} must be a positive number")
        if base in ("*", "?"):
            if base == "?" and name not in ("day of month", "day of week"):
                raise KubeflowError(f"--cron {expr!r}: '?' is allowed only for day of month or day of week")
            continue
        start, dash, end = base.partition("-")
        if not start:
            raise KubeflowError(f"--cron {expr!r}: {name} field {part!r} is empty")
        first = value(start)
        if dash and value(end) < first:
            raise KubeflowError(f"--cron {expr!r}: {name} range {base!r} runs backwards")


def package_parameters(package: Path) -> dict[str, dict[str, Any]]:
    """The pipeline's parameters as {name: {type, default}} read from the compiled package."""
    try:
        docs = list(yaml.safe_load_all(Path(package).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise KubeflowError(f"--package {package}: no such file; run `medrl pipeline compile`") from None
    spec: Any = docs[0] if docs else None
    try:
        params = spec["root"]["inputDefinitions"]["parameters"]
    except (TypeError, KeyError):
        raise KubeflowError(f"--package {package}: not a compiled Kubeflow pipeline (no root parameters)") from None
    return {name: {"type": p["parameterType"], "default": p.get("defaultValue")} for name, p in params.items()}


def _typed(name: str, raw: str, kind: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(raw)
        if kind == "NUMBER_DOUBLE":
            return float(raw)
        if kind == "BOOLEAN":
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if kind in ("LIST", "STRUCT"):
            value = yaml.safe_load(raw) if raw else ([] if kind == "LIST" else {})
            if not isinstance(value, list if kind == "LIST" else dict):
                raise ValueError(raw)
            return value
    except (ValueError, yaml.YAMLError):
        want = {"NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number", "BOOLEAN": "true or false"}
        want |= {"LIST": 'a JSON list, e.g. ["a", "b"]', "STRUCT": 'a JSON object, e.g. {"k": "v"}'}
        raise KubeflowError(f"--param {name}={raw}: {name} takes {want[kind]}") from None
    return raw


def arguments(
    package: Path, params: list[str] | None = None, preset: str | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Run arguments from `--param k=v`, `--preset` and positional overrides, typed by the package's parameters."""
    known = package_parameters(package)
    out: dict[str, Any] = {}
    for text in params or []:
        name, sep, raw = text.partition("=")
        if not sep or not name:
            raise KubeflowError(f"--param {text!r} must look like name=value, e.g. --param gpus_per_node=4")
        if name not in known:
            raise KubeflowError(f"--param {name}: the pipeline has no such parameter; it has {', '.join(known)}")
        out[name] = _typed(name, raw, known[name]["type"])
    if out.get("gpus_per_node", 0) > 0 and "eval_gpus" in known and "eval_gpus" not in out:
        # eval_gpus defaults to 0 (the tiny demo on a CPU cluster): a model trained on GPUs would then answer every
        # test question on the evaluation pod's CPU, for hours to days, with nothing said.
        raise KubeflowError(
            f"--param gpus_per_node={out['gpus_per_node']} trains on GPUs but eval_gpus is left at 0, so evaluation "
            "would generate every answer on a CPU: add --param eval_gpus=1 (or eval_gpus=0 to mean it)"
        )
    if preset:
        out["preset"] = preset
    if overrides:
        out["overrides"] = list(out.get("overrides", [])) + list(overrides)
    return out


def client(host: str, token: str | None = None, namespace: str | None = None):
    """A kfp.Client for `host` (the KFP UI/API address, e.g. http://localhost:8080 after a port-forward)."""
    import warnings

    import kfp

    if not re.match(r"^https?://", host or ""):
        raise KubeflowError(f"--host {host!r}: give the Kubeflow Pipelines address with its scheme, e.g. http://...")
    # Fail fast: kfp.Client retries an unreachable server for half a minute before it says so.
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    httpx.get(f"{host.rstrip('/')}/apis/v2beta1/healthz", headers=headers, timeout=10).raise_for_status()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, existing_token=token or None, namespace=namespace or "kubeflow")


def _quiet(fn, *args, **kwargs):
    """kfp.Client prints links on stdout; medrl prints its own summary."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@contextlib.contextmanager
def _api(host: str):
    """Turn the API's failures (unreachable, refused, unauthorised) into one message naming the host."""
    try:
        yield
    except KubeflowError:
        raise
    except Exception as err:  # kfp raises ApiException, urllib3 and timeout errors alike
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise KubeflowError(
            f"--host {host}: the Kubeflow Pipelines API failed ({type(err).__name__}: {first}). Check the address "
            "(e.g. kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80, then --host http://localhost:8080) "
            "and --token"
        ) from None


def submit(
    host: str,
    package: Path,
    args: dict[str, Any],
    experiment: str = "medrl",
    run_name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """Start one run of the package in `experiment`; returns its id and UI link."""
    name = run_name or f"medrl {args.get('preset') or 'study'} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    with _api(host):
        result = _quiet(
            client(host, token, namespace).create_run_from_pipeline_package,
            str(package),
            arguments=args,
            run_name=name,
            experiment_name=experiment,
            namespace=namespace or None,
            service_account=service_account or None,
        )
    return {"run_id": result.run_id, "name": name, "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}


def schedule(
    host: str,
    package: Path,
    args: dict[str, Any],
    cron: str,
    experiment: str = "medrl",
    name: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = True,
    namespace: str | None = None,
    service_account: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """Create a recurring run on a cron schedule; returns its id."""
    cron = validate_cron(cron)
    if args.get("run_id"):
        raise KubeflowError(
            f"--param run_id={args['run_id']}: every scheduled run would resume that one run folder and find it done "
            "(nothing trains after the first); leave run_id out: each scheduled run gets a new time-based id"
        )
    if not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise KubeflowError(f"--max-concurrency {max_concurrency}: must be within 1-{MAX_CONCURRENCY}")
    name = name or f"medrl {args.get('preset') or 'study'} ({cron})"
    with _api(host):
        kfp_client = client(host, token, namespace)
        exp = _quiet(kfp_client.create_experiment, name=experiment, namespace=namespace or None)
        job = kfp_client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=args,
            pipeline_package_path=str(package),
            service_account=service_account or None,
        )
    return {"recurring_run_id": job.recurring_run_id, "name": name, "cron": cron}


def runs(
    host: str, experiment: str | None = None, limit: int = 20, namespace: str | None = None, token: str | None = None
) -> list[dict[str, str]]:
    """The newest runs (of `experiment` if given), newest first."""
    with _api(host):
        kfp_client = client(host, token, namespace)
        experiment_id = None
        if experiment:
            found = _quiet(kfp_client.get_experiment, experiment_name=experiment, namespace=namespace)
            experiment_id = found.experiment_id
        page = kfp_client.list_runs(page_size=limit, sort_by="created_at desc", experiment_id=experiment_id)
    out = []
    for r in page.runs or []:
        created = r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else ""
        out.append({"run_id": r.run_id, "name": r.display_name or "", "state": str(r.state or ""), "created": created})
    return out


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=str)
