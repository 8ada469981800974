"""The study pipeline: init -> prep -> (train -> evaluate) per arm, level by level -> report, inside an exit
handler that deletes training jobs a failed or stopped run leaves behind.

Arms that start from another arm's model (`init: arm:<name>`) sit one level later, so SFT -> GRPO chains
train in order while independent arms fan out in parallel. The same definition runs on Kubeflow Pipelines
(training as PyTorchJobs) and locally through kfp.local (`medrl run`, `medrl demo`), which ignores the
Kubernetes settings below.

Images: the steps that only orchestrate run on the slim image, evaluation on the training image, which is also the
default of the `image` parameter (the training pods).
"""

from types import SimpleNamespace

from kfp import dsl
from kfp import kubernetes as k8s

from medrl import tracking
from medrl.cluster.spec import JUDGE_KEY, JUDGE_KEY_SECRET
from medrl.components import on_image
from medrl.components.cleanup import cleanup
from medrl.components.evaluate import evaluate
from medrl.components.prep import prep
from medrl.components.report import report
from medrl.components.start import arms_at_level, init_run
from medrl.components.train import train
from medrl.config import MAX_LEVELS
from medrl.kfp.parameters import (
    CLUSTER_PARAMETERS,
    DEFAULT_IMAGE,
    DEFAULT_SLIM_IMAGE,
    PARAMETERS,
    STUDY_PARAMETERS,
    docstring,
    signature,
)

STORE_CONFIG = "medrl-store"  # ConfigMap in the pipeline's namespace: default store URI and S3 endpoint
STORE_CONFIG_KEYS = {
    key: key
    # MLFLOW_TRACKING_URI: the site's MLflow server, which init freezes into the run's config.
    for key in (
        "MEDRL_STORE",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "HF_HUB_OFFLINE",
        "MEDRL_PUSHGATEWAY_URL",
        "MLFLOW_TRACKING_URI",
    )
}
EVAL_SHM_SIZE = "16Gi"  # /dev/shm of the evaluate pods
UID = 1000  # the images' non-root user (their USER), which the local container runner runs the steps as
DESCRIPTION = "Fine-tune and evaluate every arm of a medrl study."
# Retries (kfp set_retry; on Kubeflow, Argo's retryStrategy) for tasks that are safe to run again: init keeps a
# frozen config, prep and report skip what is committed, cleanup and arms_at_level only read or delete. The
# backend stops retrying once backoff_max_duration has passed since the first attempt started (kfp's default is
# one hour), so each bound exceeds how long its task may run.
RETRY = {"num_retries": 2, "backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "12h"}
# The train task only submits and follows its job, and a retried one follows the job already there, so a failed or
# evicted launcher pod costs nothing; the exit handler waits, since its group is not done while a retry is pending.
# A deleted one (kubectl drain) is not retried: KFP (2.15-2.17) sets no Argo retryPolicy, and Argo's default,
# OnFailure, leaves a deleted pod's error alone. Its bound exceeds the longest a job is followed (7 days).
TRAIN_RETRY = {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2.0, "backoff_max_duration": "8d"}


def _in_cluster(task, store_secret, cpu: str = "2", memory: str = "8Gi"):
    """Settings every task gets on Kubernetes: store credentials and endpoint as env, bounded. Non-root comes from
    the images (USER 1000), not from kfp-kubernetes' set_security_context: Kubeflow Pipelines before 2.16 does not
    know that setting and refuses to start any run of a pipeline that carries it (tests/unit/pipelines/
    test_study.py)."""
    k8s.use_secret_as_env(
        task, store_secret, {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}, optional=True
    )
    k8s.use_config_map_as_env(task, STORE_CONFIG, STORE_CONFIG_KEYS, optional=True)
    k8s.use_secret_as_env(task, tracking.CREDENTIALS_SECRET, tracking.CREDENTIALS_KEYS, optional=True)
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    return task.set_caching_options(False)


def build(
    image: str = DEFAULT_SLIM_IMAGE,
    train_image: str = DEFAULT_IMAGE,
    parallelism: int = 0,
    eval_shm_size: str = EVAL_SHM_SIZE,
    retries: bool = True,
    train_in_step: bool = False,
):
    """The pipeline function: the orchestrating steps on `image`, evaluate on `train_image` (also the training
    pods' default image); `parallelism` caps concurrent arms per level (0: no cap); `retries` off for kfp.local,
    where a failed step would only fail again; `train_in_step` for kfp.local too, where the train step trains in
    process and so runs on `train_image` (in the cluster it only submits and follows a job: `image`). Its
    parameters are `medrl.kfp.parameters.PARAMETERS`."""
    stages = (cleanup, init_run, arms_at_level, prep, report)
    c = SimpleNamespace(**{stage.python_func.__name__: on_image(stage, image) for stage in stages})
    c.train = on_image(train, train_image if train_in_step else image)
    c.evaluate = on_image(evaluate, train_image)

    def retried(task, policy=RETRY):
        return task.set_retry(**policy) if retries else task

    def study(*values):
        # kfp passes the parameters positionally, in the order of the signature set below.
        p = SimpleNamespace(**dict(zip([q.name for q in PARAMETERS], values, strict=True)))
        done = c.cleanup(pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, namespace=p.namespace, launcher=p.launcher)
        retried(_in_cluster(done, p.store_secret, cpu="1", memory="1Gi"))
        with dsl.ExitHandler(done, name="study"):
            run = _in_cluster(c.init_run(**{q.name: getattr(p, q.name) for q in STUDY_PARAMETERS}), p.store_secret)
            retried(run)
            data = retried(_in_cluster(c.prep(run_uri=run.output), p.store_secret, cpu="4", memory="16Gi"))
            previous, evaluations = data, []
            for level in range(MAX_LEVELS):
                names = _in_cluster(c.arms_at_level(run_uri=run.output, level=level), p.store_secret, "1", "2Gi")
                retried(names)
                with dsl.ParallelFor(names.output, parallelism=parallelism) as item:
                    trained = c.train(
                        run_uri=item.run_uri, arm=item.arm, pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                        **{q.name: getattr(p, q.name) for q in CLUSTER_PARAMETERS},
                    ).after(previous)  # fmt: skip
                    # In the cluster this task only submits and follows the PyTorchJob: no GPU of its own.
                    retried(_in_cluster(trained, p.store_secret, cpu="1", memory="2Gi"), TRAIN_RETRY)
                    # evaluate is not retried: a failure that repeats (memory, a bad model) would cost GPU hours
                    # each time; a judge outage is scored again on resubmit from the stored answers.
                    scored = c.evaluate(run_uri=item.run_uri, arm=item.arm).after(trained)
                    _in_cluster(scored, p.store_secret, cpu="8", memory="64Gi")
                    # The thinking score's judge, where it asks for an API key.
                    k8s.use_secret_as_env(scored, JUDGE_KEY_SECRET, JUDGE_KEY, optional=True)
                    scored.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(p.eval_gpus)
                    # kfp 2.17 does not carry a channel used only in a resource limit into the loop's inputs.
                    scored.register_pipeline_channels([p.eval_gpus])
                    k8s.add_node_selector_json(scored, p.node_selector)
                    k8s.add_toleration_json(scored, p.tolerations)
                    k8s.empty_dir_mount(scored, "dshm", "/dev/shm", medium="Memory", size_limit=eval_shm_size)
                previous = trained
                evaluations.append(scored)
            retried(_in_cluster(c.report(run_uri=run.output).after(*evaluations), p.store_secret, "2", "8Gi"))

    study.__signature__ = signature(train_image)  # type: ignore[attr-defined]  # what dsl.pipeline reads
    study.__doc__ = docstring(DESCRIPTION)
    return dsl.pipeline(name="medrl-study", description=DESCRIPTION)(study)
