"""Train one arm of the study: in the cluster as a PyTorchJob (the task waits for it), locally in process."""

from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
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
) -> str:
    """Returns the URI of the model the arm evaluates."""
    from medrl.infra.launch import train_arm

    cluster = {
        "pipeline_run": pipeline_run,
        "image": image,
        "namespace": namespace,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "cpu": cpu,
        "memory": memory,
        "shm_size": shm_size,
        "node_selector": node_selector,
        "tolerations": tolerations,
        "store_secret": store_secret,
    }
    return train_arm(run_uri, arm, launcher, cluster)
