"""The cluster layer: where one arm trains (in process, PyTorchJob, TrainJob) and the training pod's entrypoint."""
