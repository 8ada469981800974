"""The study pipeline's parameters (one table: the pipeline's signature, the UI's help, `--param` checks) and where
the compiled pipeline medrl ships lies.

The pipeline itself is `medrl.pipelines.study` (the repository's `pipelines/`, shipped inside the package), its
components `medrl.components` (`components/`); compiling is `medrl.pipelines.compile`, the local run
`medrl.pipelines.local`.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from medrl.config import DATA_SOURCES, load_config, seed_list

DEFAULT_IMAGE = "ghcr.io/medrl/medrl:0.1.0"  # the training image (Dockerfile target `train`): GPU pods
DEFAULT_SLIM_IMAGE = "ghcr.io/medrl/medrl-slim:0.1.0"  # target `slim`: the steps that only orchestrate
COMPILED = "study.yaml"  # where `medrl pipeline compile` writes without --out (the current folder)
STORE_ENV = "MEDRL_STORE"  # the site's default store, from the medrl-store ConfigMap in the cluster


@dataclass(frozen=True)
class Parameter:
    """One parameter of the study pipeline, as users see it in the Kubeflow UI and pass with `--param`."""

    name: str
    type: type  # str, int, list or dict: kfp's STRING, NUMBER_INTEGER, LIST, STRUCT
    default: Any
    help: str


# The init step turns these into config overrides (`init_from_parameters`); empty or 0 keeps the preset's value.
STUDY_PARAMETERS = (
    Parameter("preset", str, "demo", "A shipped study (demo, paper-table1, ...); empty when `config` is given."),
    Parameter("config", str, "", "A whole study YAML instead of a preset."),
    Parameter("overrides", list, [], 'Settings as key.sub=value, e.g. ["train.learning_rate=1e-5"].'),
    Parameter(
        "store",
        str,
        "",
        "Where artifacts go (s3://bucket/prefix); empty: the medrl-store ConfigMap's `store`, else the preset's.",
    ),
    Parameter("run_id", str, "", "Run folder name; empty: time-based."),
    Parameter("arms", str, "", "Comma-separated arms to run (with the arms they start from); empty: all."),
    Parameter("base_model", str, "", "Hub id or store URI of the base model; empty: the preset's."),
    Parameter(
        "dataset_source",
        str,
        "",
        f"{' | '.join(DATA_SOURCES)}; empty: the preset's.",
    ),
    Parameter("dataset_uri", str, "", "Where the source dataset lies (data.input); empty: the preset's."),
    Parameter("steps", int, 0, "Optimizer steps of every trained arm; 0: the preset's."),
    Parameter("seeds", str, "", "Training seeds: a count (3: seeds 0, 1, 2) or a list (0,1,2); empty: the preset's."),
    Parameter(
        "judge_url", str, "", "Base URL of an OpenAI-compatible judge (e.g. http://medrl-judge.medrl.svc:8000/v1)."
    ),
    Parameter("judge_model", str, "", "Model name the judge serves."),
    Parameter(
        "mlflow_uri",
        str,
        "",
        "MLflow tracking server (http://host:port); empty: the config's, else the site's MLFLOW_TRACKING_URI "
        "(medrl-store ConfigMap), else none; off: no tracking.",
    ),
)
# The train step's cluster settings: fields of `medrl.cluster.spec.TrainSpec`, under the same names.
CLUSTER_PARAMETERS = (
    Parameter(
        "launcher",
        str,
        "auto",
        "Where arms train: auto (in the cluster a TrainJob where Kubeflow Trainer v2 is installed, else a PyTorchJob; "
        "in process elsewhere), trainjob, pytorchjob, inprocess.",
    ),
    Parameter("image", str, DEFAULT_IMAGE, "Image of the training pods."),
    Parameter("namespace", str, "medrl", "Namespace of the training jobs (PyTorchJob or TrainJob)."),
    Parameter("nodes", int, 1, "Nodes per training job (one Master, the rest Workers)."),
    Parameter("gpus_per_node", int, 0, "GPUs (= processes) per node; 0: one CPU process."),
    Parameter("cpu", str, "8", "CPU of each training pod."),
    Parameter("memory", str, "64Gi", "Memory of each training pod."),
    Parameter("shm_size", str, "16Gi", "Size of /dev/shm in training pods."),
    Parameter(
        "node_selector",
        dict,
        {},
        'Node labels for training and evaluation pods, e.g. {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}.',
    ),
    Parameter(
        "tolerations",
        list,
        [],
        "Tolerations for training and evaluation pods, e.g. "
        '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}].',
    ),
    Parameter("store_secret", str, "medrl-store", "Secret with keys accesskey and secretkey for the store."),
    Parameter(
        "attempts_without_progress",
        int,
        3,
        "Failed attempts of a training job in a row without a newer committed checkpoint before its node gives up "
        "(exit 1, causes listed).",
    ),
    Parameter(
        "training_runtime",
        str,
        "torch-distributed",
        "TrainJob only: the (Cluster)TrainingRuntime it references; medrl-torch-distributed (k8s/components/trainer) "
        "adds the metrics port Prometheus scrapes and a restart budget.",
    ),
)
PARAMETERS = (*STUDY_PARAMETERS, *CLUSTER_PARAMETERS, Parameter("eval_gpus", int, 0, "GPUs of each evaluation pod."))


def signature(image: str = DEFAULT_IMAGE) -> inspect.Signature:
    """The pipeline function's signature (kfp reads names, types and defaults from it); `image` is the default
    of the `image` parameter, the image the pipeline was compiled for."""
    defaults = {"image": image}
    return inspect.Signature(
        [
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=p.type,
                default=defaults.get(p.name, copy.deepcopy(p.default)),
            )
            for p in PARAMETERS
        ]
    )


def docstring(summary: str) -> str:
    """`summary` and an Args section, which kfp turns into each parameter's description in the UI."""
    return "\n".join([summary, "", "Args:", *(f"    {p.name}: {p.help}" for p in PARAMETERS)])


def packaged_pipeline() -> Path:
    """The compiled pipeline shipped with medrl (built for the default image), for `pipeline submit|schedule`."""
    try:
        shipped = Path(str(resources.files("medrl.pipelines").joinpath("compiled", COMPILED)))
    except ModuleNotFoundError:  # an editable install made before components/ and pipelines/ were shipped
        shipped = None
    if shipped is None or not shipped.is_file():
        raise FileNotFoundError(
            "the compiled pipeline medrl ships (medrl/pipelines/compiled/study.yaml) is not installed"
        )
    return shipped


def pipeline_images(image: str | None = None, train_image: str | None = None) -> tuple[str, str]:
    """(orchestration image, training image) of a compile: neither given, the slim and the training image medrl
    publishes; only `image` given, that one image for every step (a site that builds only the training image)."""
    if train_image is None:
        train_image = image or DEFAULT_IMAGE
    return image or DEFAULT_SLIM_IMAGE, train_image


def parameter_overrides(
    preset: str = "",
    config: str = "",
    overrides: list[str] | None = None,
    arms: str = "",
    base_model: str = "",
    dataset_source: str = "",
    dataset_uri: str = "",
    steps: int = 0,
    judge_url: str = "",
    judge_model: str = "",
    mlflow_uri: str = "",
    seeds: str = "",
) -> list[str]:
    """The pipeline's named parameters as config overrides (empty or 0: keep the preset's value), after the
    user's own `overrides`. `steps` sets max_steps of every arm that trains."""
    out = [str(o) for o in overrides or []]
    if base_model:
        out.append(f"model.base={base_model}")
    if dataset_source:
        out.append(f"data.source={dataset_source}")
    if dataset_uri:
        out.append(f"data.input={dataset_uri}")
    for block in ("judge", "evaluate.judge"):
        if judge_url:
            out += [f"{block}.backend=openai", f"{block}.url={judge_url}"]
        if judge_model:
            out.append(f"{block}.model={judge_model}")
    if mlflow_uri:
        out.append(f"tracking.mlflow_uri={mlflow_uri}")
    if str(seeds).strip():
        out.append(f"seeds={seed_list(seeds, 'seeds')}")
    if steps < 0:
        raise ValueError(f"steps={steps}: give the optimizer steps of every trained arm, or 0 for the preset's")
    if steps:
        cfg = load_config(preset=preset or None, text=config or None, overrides=out, arms=arm_list(arms) or None)
        out += [f"arms.{name}.max_steps={steps}" for name, arm in cfg.arms.items() if arm.method != "none"]
    return out


def arm_list(arms: str) -> list[str]:
    return [a.strip() for a in arms.split(",") if a.strip()]
