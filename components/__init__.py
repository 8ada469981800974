"""Kubeflow components: one module per stage, each a lightweight Python component whose body imports medrl
and calls one function of `medrl.study`. Only stdlib and kfp are imported at the top."""

import os

# The image every component runs in; `medrl pipeline compile --image` sets it.
IMAGE = os.environ.get("MEDRL_IMAGE", "ghcr.io/medrl/medrl:0.1.0")
