"""The study pipeline: init -> prep -> (train -> evaluate) per arm, level by level -> report, inside an exit
handler that deletes training jobs a failed or stopped run leaves behind.

Arms that start from another arm's model (`init: arm:<name>`) sit one level later, so SFT -> GRPO chains
train in order while independent arms fan out in parallel. The same definition runs on Kubeflow Pipelines
(training as PyTorchJobs) and locally through kfp.local (`medrl run`, `medrl demo`), which ignores the
Kubernetes settings below.
"""

import os

from kfp import dsl
from kfp import kubernetes as k8s

from components import IMAGE
from components.cleanup import cleanup
from components.evaluate import evaluate
from components.plan import arms_at_level, init_run
from components.prep import prep
from components.report import report
from components.train import train
from medrl.config import MAX_LEVELS

STORE_CONFIG = "medrl-store"  # ConfigMap in the pipeline's namespace: default store URI and S3 endpoint
STORE_CONFIG_KEYS = {
    key: key for key in ("MEDRL_STORE", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "HF_HUB_OFFLINE", "MEDRL_PUSHGATEWAY_URL")
}
SHM_SIZE = os.environ.get("MEDRL_EVAL_SHM_SIZE", "16Gi")  # /dev/shm of the evaluate pods (compile time)
UID = 1000  # the image's non-root user


def _in_cluster(task, store_secret, cpu: str = "2", memory: str = "8Gi"):
    """Settings every task gets on Kubernetes: store credentials and endpoint as env, non-root, bounded."""
    k8s.use_secret_as_env(
        task, store_secret, {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}, optional=True
    )
    k8s.use_config_map_as_env(task, STORE_CONFIG, STORE_CONFIG_KEYS, optional=True)
    k8s.set_security_context(task, run_as_user=UID, run_as_group=UID, run_as_non_root=True)
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    return task.set_caching_options(False)


def build(parallelism: int = 0):
    """The pipeline function; `parallelism` caps concurrent arms per level (0: no cap)."""

    @dsl.pipeline(name="medrl-study", description="Fine-tune and evaluate every arm of a medrl study.")
    def study(
        preset: str = "demo",
        config: str = "",
        overrides: list = [],  # noqa: B006  (kfp takes pipeline defaults from the signature)
        store: str = "",
        run_id: str = "",
        arms: str = "",
        base_model: str = "",
        dataset_source: str = "",
        dataset_uri: str = "",
        steps: int = 0,
        judge_url: str = "",
        judge_model: str = "",
        launcher: str = "auto",
        image: str = IMAGE,
        namespace: str = "medrl",
        nodes: int = 1,
        gpus_per_node: int = 0,
        cpu: str = "8",
        memory: str = "64Gi",
        shm_size: str = "16Gi",
        node_selector: dict = {},  # noqa: B006
        tolerations: list = [],  # noqa: B006
        store_secret: str = "medrl-store",
        eval_gpus: int = 0,
    ):
        """Fine-tune and evaluate every arm of a medrl study.

        Args:
            preset: A shipped study (demo, paper-table1, ...); empty when `config` is given.
            config: A whole study YAML instead of a preset.
            overrides: Settings as key.sub=value, e.g. ["train.learning_rate=1e-5"].
            store: Where artifacts go (s3://bucket/prefix); empty: the medrl-store ConfigMap's `store`, else the preset's.
            run_id: Run folder name; empty: time-based.
            arms: Comma-separated arms to run (with the arms they start from); empty: all.
            base_model: Hub id or store URI of the base model; empty: the preset's.
            dataset_source: synthetic | pmc-vqa | vqa-rad | path-vqa | slake | omnimedvqa | jsonl | cxr-synthetic |
                mimic-cxr | ms-cxr | vindr-cxr; empty: the preset's.
            dataset_uri: Where the source dataset lies (data.input); empty: the preset's.
            steps: Optimizer steps of every trained arm; 0: the preset's.
            judge_url: Base URL of an OpenAI-compatible judge (e.g. http://medrl-judge.medrl.svc:8000/v1).
            judge_model: Model name the judge serves.
            launcher: Where arms train: auto (PyTorchJob in the cluster, in process elsewhere), pytorchjob, inprocess.
            image: Image of the training pods.
            namespace: Namespace of the PyTorchJobs.
            nodes: Nodes per training job (one Master, the rest Workers).
            gpus_per_node: GPUs (= processes) per node; 0: one CPU process.
            cpu: CPU of each training pod.
            memory: Memory of each training pod.
            shm_size: Size of /dev/shm in training pods.
            node_selector: Node labels for training and evaluation pods, e.g. {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}.
            tolerations: Tolerations for training and evaluation pods, e.g. [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}].
            store_secret: Secret with keys accesskey and secretkey for the store.
            eval_gpus: GPUs of each evaluation pod.
        """  # noqa: E501
        done = cleanup(pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, namespace=namespace, launcher=launcher)
        _in_cluster(done, store_secret, cpu="1", memory="1Gi")
        with dsl.ExitHandler(done, name="study"):
            run = init_run(
                preset=preset, config=config, overrides=overrides, store=store, run_id=run_id, arms=arms,
                base_model=base_model, dataset_source=dataset_source, dataset_uri=dataset_uri, steps=steps,
                judge_url=judge_url, judge_model=judge_model,
            )  # fmt: skip
            _in_cluster(run, store_secret)
            data = _in_cluster(prep(run_uri=run.output), store_secret, cpu="4", memory="16Gi")
            previous, evaluations = data, []
            for level in range(MAX_LEVELS):
                names = _in_cluster(arms_at_level(run_uri=run.output, level=level), store_secret, "1", "2Gi")
                with dsl.ParallelFor(names.output, parallelism=parallelism) as item:
                    trained = train(
                        run_uri=item.run_uri, arm=item.arm, launcher=launcher,
                        pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, image=image, namespace=namespace,
                        nodes=nodes, gpus_per_node=gpus_per_node, cpu=cpu, memory=memory, shm_size=shm_size,
                        node_selector=node_selector, tolerations=tolerations, store_secret=store_secret,
                    ).after(previous)  # fmt: skip
                    # In the cluster this task only submits and follows the PyTorchJob: no GPU of its own.
                    _in_cluster(trained, store_secret, cpu="1", memory="2Gi")
                    scored = evaluate(run_uri=item.run_uri, arm=item.arm).after(trained)
                    _in_cluster(scored, store_secret, cpu="8", memory="64Gi")
                    scored.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(eval_gpus)
                    # kfp 2.17 does not carry a channel used only in a resource limit into the loop's inputs.
                    scored.register_pipeline_channels([eval_gpus])
                    k8s.add_node_selector_json(scored, node_selector)
                    k8s.add_toleration_json(scored, tolerations)
                    k8s.empty_dir_mount(scored, "dshm", "/dev/shm", medium="Memory", size_limit=SHM_SIZE)
                previous = trained
                evaluations.append(scored)
            _in_cluster(report(run_uri=run.output).after(*evaluations), store_secret, cpu="2", memory="8Gi")

    return study


study = build()
