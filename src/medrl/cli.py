"""`medrl`: the command line. Each command parses its options and calls one function of the core."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from medrl.config import ConfigError, dump_config, load_config, preset_names

app = typer.Typer(
    name="medrl",
    help="Reinforcement-learning fine-tuning of medical vision-language models, on a laptop or under Kubeflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
pipeline_app = typer.Typer(
    help="Compile the study pipeline, start and schedule runs on Kubeflow Pipelines, list runs.", no_args_is_help=True
)
app.add_typer(pipeline_app, name="pipeline")
store_app = typer.Typer(help="Look into the artifact store (a directory, file:// or s3:// URI).", no_args_is_help=True)
app.add_typer(store_app, name="store")

log = logging.getLogger("medrl")

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Settings as key.sub=value, e.g. train.learning_rate=1e-5", show_default=False),
]
Preset = Annotated[str | None, typer.Option("--preset", "-p", help=f"A shipped study: {', '.join(preset_names())}")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="A study YAML file instead of a preset.")]
MetricsPort = Annotated[
    int | None, typer.Option(help="Serve training's Prometheus /metrics on this port (rank 0); env MEDRL_METRICS_PORT.")
]
Pushgateway = Annotated[
    str | None,
    typer.Option(help="Push batch stages' metrics to this Pushgateway URL; env MEDRL_PUSHGATEWAY_URL."),
]


def _metrics_env(port: int | None, pushgateway: str | None) -> None:
    """Options become environment variables, so kfp.local's subprocesses and torchrun's ranks see them too."""
    if port is not None:
        os.environ["MEDRL_METRICS_PORT"] = str(port)
    if pushgateway:
        os.environ["MEDRL_PUSHGATEWAY_URL"] = pushgateway


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="medrl: %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option(help="Directory to write the checkpoint to.")],
    arch: Annotated[str, typer.Option(help="Architecture: qwen2-vl, qwen2.5-vl, qwen3-vl or llava.")] = "qwen2-vl",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build a tiny model of a real architecture, with a tokenizer trained here (tests, the demo).

    Example: medrl tiny-model --arch qwen2-vl --out ./tiny-qwen2-vl
    """
    from medrl.infra import store
    from medrl.models.tiny import build_tiny

    with store.commit_dir(store.normalize(str(out))) as staging:
        build_tiny(arch, staging, seed=seed)
    typer.echo(f"tiny {arch} model written to {out}")


SOURCE_NAMES = (
    "synthetic | pmc-vqa | vqa-rad | path-vqa | slake | omnimedvqa | jsonl | cxr-synthetic | mimic-cxr | ms-cxr | "
    "vindr-cxr"
)


@app.command()
def prep(
    out: Annotated[str, typer.Option(help="Where the prepared dataset goes: a directory or store URI.")],
    source: Annotated[str, typer.Option(help=f"The dataset's layout: {SOURCE_NAMES}.")] = "synthetic",
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            help="The source as downloaded: folder, file, hub name, or a store URI (medrl store put); not synthetic.",
        ),
    ] = None,
    train_size: Annotated[int | None, typer.Option(help="Training rows kept (default: all; synthetic 256).")] = None,
    test_size: Annotated[int | None, typer.Option(help="Test rows kept (default: all; synthetic 64).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset draw.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of synthetic images.")] = 56,
    max_bad_fraction: Annotated[float, typer.Option(help="Fail above this share of bad rows.")] = 0.01,
    lang: Annotated[str, typer.Option(help="Question language kept (SLAKE): en, zh or all.")] = "en",
    test_fraction: Annotated[float, typer.Option(help="Share of images held out where a source has no split.")] = 0.2,
    yes_no_choices: Annotated[
        bool, typer.Option(help="Give yes/no questions the options yes and no (closed, like multiple choice).")
    ] = True,
    image_formats: Annotated[str, typer.Option(help="Allowed image formats, comma-separated.")] = "PNG,JPEG",
    workers: Annotated[
        int | None, typer.Option(help="Image-checking processes (default: CPU count, at most 8).")
    ] = None,
    images: Annotated[str | None, typer.Option(help="ms-cxr: the MIMIC-CXR-JPG folder of its images.")] = None,
    cxr_tasks: Annotated[
        str, typer.Option(help="Chest X-ray sources: report,grounding (or one).")
    ] = "report,grounding",
) -> None:
    """Turn a source into a prepared dataset (train.jsonl, test.jsonl, images/, quarantine.jsonl, summary.json).

    Sources: synthetic, pmc-vqa, vqa-rad, path-vqa, slake, omnimedvqa, jsonl, and for chest X-rays
    cxr-synthetic, mimic-cxr, ms-cxr, vindr-cxr (see README).

    Example: medrl prep --source pmc-vqa --input ./PMC-VQA --out ./data --train-size 10000 --test-size 7000 --seed 0

    Example: medrl prep --source vindr-cxr --input /data/vindr-cxr --out ./vindr --train-size 5000
    """
    from medrl.config import DataConfig
    from medrl.data.prep import prepare
    from medrl.infra import store

    cfg = DataConfig(
        source=source,
        input=input,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
        image_size=image_size,
        max_bad_fraction=max_bad_fraction,
        lang=None if lang == "all" else lang,
        test_fraction=test_fraction,
        yes_no_choices=yes_no_choices,
        image_formats=[f.strip() for f in image_formats.split(",") if f.strip()],
        images=images,
        cxr_tasks=[t.strip() for t in cxr_tasks.split(",") if t.strip()],
    )
    with store.commit_dir(store.normalize(out)) as staging:
        summary = prepare(cfg, staging, workers=workers)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Prepared dataset (directory or store URI).")],
    out: Annotated[str, typer.Option(help="Where the trained model goes (directory or store URI).")],
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
    arm: Annotated[str | None, typer.Option(help="Arm of the config to train (default: the only trained one).")] = None,
    init: Annotated[str | None, typer.Option(help="Start from this model instead of the arm's `init`.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in the work folder.")
    ] = False,
    work: Annotated[
        Path | None, typer.Option(help="Folder for checkpoints and the log (default: <out>.work beside a local --out).")
    ] = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Train one arm of a study config on a prepared dataset; checkpoints every `save_steps`.

    Several processes: torchrun --nproc_per_node 4 -m medrl train ... (rank 0 writes the model).

    Example: medrl train --preset demo --arm sft --data ./data --out ./sft-model
    Example: medrl train --config study.yaml --arm grpo --data ./data --out ./grpo-model --resume
    """
    from medrl.infra import metrics
    from medrl.train.run import rank, train_to_store

    _metrics_env(metrics_port, None)
    cfg = load_config(preset=preset, file=config, overrides=overrides or [])
    name = _pick_arm(cfg, arm)
    start = init or _standalone_init(cfg, name)
    with metrics.training_arm(name):
        summary = train_to_store(cfg, name, data, out, start, work=work, resume=resume)
    if rank() == 0:
        typer.echo(f"arm {name} trained for {summary['global_step']} steps; model in {out}")


def _standalone_init(cfg, name: str) -> str:
    """The model an arm starts from when it is trained on its own, outside a study run."""
    spec = cfg.arms[name]
    if spec.init.startswith("arm:"):
        raise ConfigError(f"arms.{name}.init={spec.init}: outside a study run, give the model with --init DIR")
    start = spec.model or cfg.model.base if spec.init == "base" else spec.init
    if start.startswith("tiny:"):
        raise ConfigError(f"model.base={start}: build it first (medrl tiny-model --out DIR) and pass --init DIR")
    return start


def _pick_arm(cfg, arm: str | None) -> str:
    if arm:
        if arm not in cfg.arms:
            raise ConfigError(f"--arm {arm}: not in the config; it has {', '.join(cfg.arms)}")
        return arm
    trained = [n for n, a in cfg.arms.items() if a.method != "none"]
    if len(trained) != 1:
        raise ConfigError(f"the config has arms {', '.join(cfg.arms)}: choose one with --arm NAME")
    return trained[0]


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Model to evaluate: hub id, directory or store URI.")],
    data: Annotated[str, typer.Option(help="Prepared dataset (directory or store URI).")],
    out: Annotated[Path, typer.Option(help="Directory for predictions.jsonl and metrics.json.")],
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
) -> None:
    """Generate answers on the test split and score them.

    Example: medrl evaluate --model ./sft-model --data ./data --out ./eval --preset demo
    """
    from medrl.data.records import write_json, write_jsonl
    from medrl.evaluate import evaluate_model
    from medrl.infra import store

    cfg = load_config(preset=preset, file=config, overrides=overrides or [])
    rows, metrics = evaluate_model(cfg, model, store.open_dir(store.normalize(data)))
    write_jsonl(out / "predictions.jsonl", rows)
    write_json(out / "metrics.json", {"n": len(rows), "metrics": metrics})
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
def report(run: Annotated[str, typer.Option(help="The run folder: <store>/<experiment>/<run_id>.")]) -> None:
    """(Re)build the report of a study run (report.md, a self-contained report.html, figures, summary.json).

    Example: medrl report --run ./medrl-runs/demo/20261121-120000-ab12
    """
    from medrl import study
    from medrl.infra import store

    uri = study.report(store.normalize(run))
    typer.echo(f"report: {uri}/report.md and {uri}/report.html")


def _run_study(preset, config, overrides, arms, store_uri, run_id, pipeline_root) -> str:
    from medrl import study
    from medrl.infra import store
    from medrl.infra.layout import RunLayout, new_run_id
    from medrl.pipeline import run_local

    arm_list = [a.strip() for a in (arms or "").split(",") if a.strip()]
    extra = [f"store={store_uri}"] if store_uri else []
    cfg = load_config(preset=preset, file=config, overrides=(overrides or []) + extra, arms=arm_list or None)
    run_id = run_id or new_run_id()
    run = RunLayout.create(store.normalize(cfg.store), cfg.experiment, run_id)
    params = {
        "preset": preset or "",
        "config": Path(config).read_text(encoding="utf-8") if config else "",
        "overrides": (overrides or []) + [f"store={store.normalize(cfg.store)}"],
        "store": "",
        "run_id": run_id,
        "arms": ",".join(arm_list),
    }
    root = Path(pipeline_root) if pipeline_root else Path(tempfile.mkdtemp(prefix="medrl-kfp-"))
    log.info("running study %s (arms: %s) as run %s", cfg.name, ", ".join(cfg.arms), run_id)
    run_local(params, root)
    results = study.collect(run.uri)
    from medrl.report import table1

    typer.echo("\n" + table1(results) + "\n")
    typer.echo(f"report: {run.report}/report.md")
    return run.uri


@app.command()
def run(
    overrides: Overrides = None,
    preset: Preset = None,
    config: ConfigFile = None,
    arms: Annotated[
        str | None, typer.Option(help="Comma-separated arms to run (and the arms they start from).")
    ] = None,
    store: Annotated[str | None, typer.Option("--store", help="Store URI: file:///path or s3://bucket/prefix.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: time-based).")] = None,
    pipeline_root: Annotated[Path | None, typer.Option(help="kfp.local working folder.")] = None,
    metrics_port: MetricsPort = None,
    pushgateway: Pushgateway = None,
) -> None:
    """Run a whole study (every arm, then the report) through the Kubeflow pipeline, locally.

    Example: medrl run --preset demo --arms sft,sft-grpo train.seed=1
    """
    if not preset and not config:
        raise ConfigError("give --preset NAME or --config FILE")
    _metrics_env(metrics_port, pushgateway)
    _run_study(preset, config, overrides, arms, store, run_id, pipeline_root)


@app.command()
def demo(
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option(help="Local store for the run.")] = Path("medrl-runs"),
    arms: Annotated[str | None, typer.Option(help="Comma-separated arms (default: all four).")] = None,
) -> None:
    """The laptop demo: a tiny Qwen2-VL model, synthetic scans, arms zero-shot / SFT / SFT->GRPO / SFT->Dr.GRPO.

    Example: medrl demo --out ./medrl-runs
    """
    _run_study("demo", None, overrides, arms, str(out.resolve()), None, None)


@app.command("config")
def show_config(overrides: Overrides = None, preset: Preset = None, config: ConfigFile = None) -> None:
    """Print the resolved configuration (defaults <- preset or file <- overrides) as YAML.

    Example: medrl config --preset demo arms.sft.epochs=5
    """
    typer.echo(dump_config(load_config(preset=preset, file=config, overrides=overrides or [])), nl=False)


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Path | None, typer.Option(help="Output YAML (default: study.yaml here).")] = None,
    image: Annotated[str | None, typer.Option(help="Container image of every component.")] = None,
) -> None:
    """Compile the study pipeline to a YAML package for the Kubeflow UI or API.

    Example: medrl pipeline compile --image registry.local/medrl:0.1.0
    """
    from medrl.pipeline import compile_pipeline

    typer.echo(f"compiled: {compile_pipeline(out, image)}")


@store_app.command("ls")
def store_ls(uri: Annotated[str, typer.Argument(help="A store URI (s3://bucket/prefix, file:///path) or a path.")]):
    """List what lies under a URI; committed artifacts show their file count and size.

    Example: medrl store ls s3://medrl/medrl/20261121-120000-ab12/arms/grpo/checkpoints
    """
    from medrl.infra import store

    entries = store.ls(store.normalize(uri))
    if not entries:
        typer.echo(f"nothing under {uri}")
    for e in entries:
        if e["kind"] == "committed":
            typer.echo(f"{e['name'] + '/':<32} committed  {e['files']:>6} files  {_size(e['bytes']):>10}")
        elif e["kind"] == "folder":
            typer.echo(f"{e['name'] + '/':<32} folder (not committed)")
        else:
            typer.echo(e["name"])


@store_app.command("get")
def store_get(
    uri: Annotated[str, typer.Argument(help="A committed artifact or a single object.")],
    dest: Annotated[Path, typer.Argument(help="Local directory (artifact) or file (object) to write.")],
):
    """Download a committed artifact (every file checked against its sha256) or one object.

    Example: medrl store get s3://medrl/medrl/20261121-120000-ab12/arms/grpo/model ./grpo-model
    """
    from medrl.infra import store

    uri = store.normalize(uri)
    if store.is_committed(uri):
        store.download(uri, dest)
        typer.echo(f"{uri} -> {dest}/ (verified)")
    else:
        data = store.read_bytes(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        typer.echo(f"{uri} -> {dest} ({_size(len(data))})")


@store_app.command("put")
def store_put(
    src: Annotated[Path, typer.Argument(help="A local folder: a dataset as downloaded, a model's weights.")],
    uri: Annotated[str, typer.Argument(help="Where it goes (s3://bucket/prefix or file:///path).")],
    replace: Annotated[bool, typer.Option(help="Replace an artifact already committed at the URI.")] = False,
):
    """Commit a local folder to the store as one artifact (every file's sha256 in its MANIFEST.json), e.g. a
    dataset that `medrl prep --input <uri>` then reads, or base-model weights for `model.base=<uri>`.

    Example: medrl store put ./PMC-VQA s3://medrl/datasets/pmc-vqa
    """
    from medrl.infra import store

    uri = store.normalize(uri)
    summary = store.put_artifact(src, uri, replace)
    typer.echo(f"{src}/ -> {uri} ({summary['files']} files, {_size(summary['bytes'])})")


@store_app.command("verify")
def store_verify(
    uri: Annotated[str, typer.Argument(help="A committed artifact.")],
    show_paths: Annotated[bool, typer.Option(help="Name a damaged file (file names may carry patient data).")] = False,
):
    """Check every file of a committed artifact against the sha256 in its MANIFEST.json; exit 1 if damaged.

    Example: medrl store verify s3://medrl/medrl/20261121-120000-ab12/data
    """
    from medrl.infra import store

    uri = store.normalize(uri)
    try:
        summary = store.verify(uri)
    except store.IntegrityError as err:
        typer.echo(f"DAMAGED: {err}", err=True)
        if show_paths and err.file:
            typer.echo(f"damaged file: {err.file}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {summary['files']} files, {_size(summary['bytes'])} match {uri}/MANIFEST.json")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ------------------------------------------------------------------ pipeline submit | schedule | runs (Kubeflow)
KfpHost = Annotated[
    str,
    typer.Option(
        "--host", envvar="KF_PIPELINES_ENDPOINT", help="Kubeflow Pipelines address, e.g. http://localhost:8080."
    ),
]
KfpPackage = Annotated[Path | None, typer.Option("--package", help="Compiled pipeline (default: the one medrl ships).")]
KfpParams = Annotated[
    list[str] | None, typer.Option("--param", help="Pipeline parameter name=value (repeat), e.g. gpus_per_node=4.")
]
KfpExperiment = Annotated[str, typer.Option("--experiment", help="Kubeflow experiment the run goes into.")]
KfpNamespace = Annotated[str | None, typer.Option("--namespace", help="Profile namespace (multi-user Kubeflow).")]
KfpServiceAccount = Annotated[str | None, typer.Option("--service-account", help="Service account of the run.")]
KfpToken = Annotated[str | None, typer.Option("--token", envvar="MEDRL_KFP_TOKEN", help="Bearer token for the API.")]


def _package(package: Path | None) -> Path:
    from medrl.pipeline import packaged_pipeline

    return package or packaged_pipeline()


@pipeline_app.command("submit")
def pipeline_submit(
    host: KfpHost,
    overrides: Overrides = None,
    preset: Preset = None,
    param: KfpParams = None,
    experiment: KfpExperiment = "medrl",
    run_name: Annotated[str | None, typer.Option("--run-name", help="Name shown in the UI.")] = None,
    package: KfpPackage = None,
    namespace: KfpNamespace = None,
    service_account: KfpServiceAccount = None,
    token: KfpToken = None,
) -> None:
    """Start one run of the study pipeline on Kubeflow Pipelines.

    Example: medrl pipeline submit --host http://localhost:8080 --preset paper-table1 --param gpus_per_node=4
    """
    from medrl.infra import kubeflow

    pkg = _package(package)
    args = kubeflow.arguments(pkg, param, preset, overrides)
    run = kubeflow.submit(host, pkg, args, experiment, run_name, namespace, service_account, token)
    typer.echo(f"run {run['run_id']} started in experiment {experiment}: {run['url']}")


@pipeline_app.command("schedule")
def pipeline_schedule(
    host: KfpHost,
    cron: Annotated[str, typer.Option("--cron", help="Six fields, seconds first: '0 0 2 * * 0' = Sundays 02:00.")],
    overrides: Overrides = None,
    preset: Preset = None,
    param: KfpParams = None,
    experiment: KfpExperiment = "medrl",
    name: Annotated[str | None, typer.Option("--name", help="Name of the recurring run.")] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", help="Runs at once (1-10).")] = 1,
    catchup: Annotated[
        bool, typer.Option("--catchup/--no-catchup", help="Start the runs missed while paused (Kubeflow's default).")
    ] = True,
    package: KfpPackage = None,
    namespace: KfpNamespace = None,
    service_account: KfpServiceAccount = None,
    token: KfpToken = None,
) -> None:
    """Schedule the study pipeline as a recurring run (e.g. weekly re-runs on fresh data).

    Example: medrl pipeline schedule --host http://localhost:8080 --cron "0 0 2 * * 0" --no-catchup
    """
    from medrl.infra import kubeflow

    pkg = _package(package)
    args = kubeflow.arguments(pkg, param, preset, overrides)
    job = kubeflow.schedule(
        host, pkg, args, cron, experiment, name, max_concurrency, catchup, namespace, service_account, token
    )
    typer.echo(f"recurring run {job['recurring_run_id']} ({job['name']}) scheduled: {job['cron']}")


@pipeline_app.command("runs")
def pipeline_runs(
    host: KfpHost,
    experiment: Annotated[str | None, typer.Option("--experiment", help="Only runs of this experiment.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many runs, newest first.")] = 20,
    namespace: KfpNamespace = None,
    token: KfpToken = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the newest runs on Kubeflow Pipelines with their state.

    Example: medrl pipeline runs --host http://localhost:8080 --experiment medrl
    """
    from medrl.infra import kubeflow

    rows = kubeflow.runs(host, experiment, limit, namespace, token)
    if as_json:
        typer.echo(kubeflow.to_json(rows))
        return
    typer.echo(f"{'RUN ID':<38} {'STATE':<11} {'CREATED':<20} NAME")
    for r in rows:
        typer.echo(f"{r['run_id']:<38} {r['state']:<11} {r['created']:<20} {r['name']}")


@app.command("train-arm")
def train_arm_entry(
    run: Annotated[str, typer.Option("--run", "--run-uri", help="The run's URI: <store>/<experiment>/<run_id>.")],
    arm: Annotated[str, typer.Option("--arm", help="The arm to train.")],
) -> None:
    """Train one arm of a study run on this node: the PyTorchJob container's entrypoint.

    Reads the training operator's environment (PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, MASTER_ADDR/PORT),
    starts one process per GPU with DeepSpeed ZeRO-2, and resumes from the newest committed checkpoint.

    Example: medrl train-arm --run s3://medrl/runs/paper/20261121-120000-ab12 --arm grpo
    """
    from medrl.infra.entrypoint import main as entry

    raise typer.Exit(entry(run, arm))


@app.command()
def doctor(
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="Check this cluster (default: KUBECONFIG).")
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Check only this machine, even with a kubeconfig.")] = False,
    namespace: Annotated[str, typer.Option("--namespace", help="medrl's namespace (PyTorchJobs, judge).")] = "medrl",
    kfp_namespace: Annotated[str, typer.Option("--kfp-namespace", help="Where pipeline pods run.")] = "kubeflow",
    service_account: Annotated[
        str, typer.Option("--service-account", help="Service account of pipeline runs.")
    ] = "pipeline-runner",
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs a training node needs (gpus_per_node).")] = 0,
    store: Annotated[str | None, typer.Option("--store-endpoint", help="S3 endpoint (default: ConfigMap).")] = None,
    prometheus: Annotated[str | None, typer.Option("--prometheus", help="Prometheus address.")] = None,
    pushgateway: Annotated[str | None, typer.Option("--pushgateway", help="Pushgateway address.")] = None,
    judge: Annotated[str | None, typer.Option("--judge", help="Judge server address.")] = None,
) -> None:
    """Check what a run needs, each failure with its fix: with a kubeconfig the cluster (PyTorchJob CRD, RBAC,
    store, Prometheus, Pushgateway, judge, GPUs), else this machine (packages, accelerator, pipeline files).

    Example: medrl doctor --gpus 4 --judge http://medrl-judge.medrl.svc:8000
    """
    from medrl.doctor import cluster_checks, kubeconfig_available, local_checks

    checks = local_checks()
    if not local and kubeconfig_available(kubeconfig):
        endpoints = {"store": store, "prometheus": prometheus, "pushgateway": pushgateway, "judge": judge}
        checks += cluster_checks(
            kubeconfig,
            context,
            namespace,
            kfp_namespace,
            service_account,
            gpus,
            {k: v for k, v in endpoints.items() if v},
        )
    elif not local:
        typer.echo("no kubeconfig: checking this machine only (give --kubeconfig to check a cluster)")
    failed = 0
    for check in checks:
        mark = "ok " if check.ok else "FAIL"
        typer.echo(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok:
            failed += 1
            typer.echo(f"       fix: {check.fix}")
    raise typer.Exit(1 if failed else 0)


def main() -> None:
    from medrl.data.prep import PrepError
    from medrl.infra.metrics import MetricsError
    from medrl.infra.store import StoreError
    from medrl.rewards import UnscorableError

    _setup_logging()
    try:
        app()
    except (ConfigError, PrepError, StoreError, MetricsError, UnscorableError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
