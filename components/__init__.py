"""Kubeflow components, shipped as `medrl.components`: one module per stage, each a lightweight Python component
whose body imports medrl and calls one core function. Only stdlib, kfp and `medrl.kfp.parameters` (stdlib only) are
imported at the top; kfp embeds each function's source, so the image needs medrl installed, not this folder."""

from kfp import dsl

from medrl.kfp.parameters import DEFAULT_IMAGE


def component(func):
    """A component on the default image; the pipeline builder re-creates it on the image it compiles for."""
    return dsl.component(func, base_image=DEFAULT_IMAGE, install_kfp_package=False)


def on_image(task_component, image: str):
    """The same component running in `image`."""
    return dsl.component(task_component.python_func, base_image=image, install_kfp_package=False)
