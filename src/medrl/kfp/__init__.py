"""The Kubeflow Pipelines layer: the study pipeline's parameters and the Kubeflow Pipelines API client."""
