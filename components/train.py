"""Train one arm of the study: in the cluster as a PyTorchJob (the task waits for it), locally in process."""

from medrl.components import component


# The cluster settings come one by one, not as one dict: the Kubeflow Pipelines backend passes a struct built from
# pipeline parameters with their placeholders unresolved (its driver resolves only whole-string constants).
@component
def train(
    run_uri: str,
    arm: str,
    launcher: str,
    pipeline_run: str,
    image: str,
    namespace: str,
    nodes: int,
    gpus_per_node: int,
    cpu: str,
    memory: str,
    shm_size: str,
    node_selector: dict,
    tolerations: list,
    store_secret: str,
    attempts_without_progress: int,
    training_runtime: str,
) -> str:
    """Returns the URI of the model the arm evaluates. Every input after `launcher` is a TrainSpec field."""
    cluster = dict(locals())  # first, while the locals are exactly the inputs
    from medrl.cluster.launch import launch_arm

    return launch_arm(cluster.pop("run_uri"), cluster.pop("arm"), cluster.pop("launcher"), cluster)
