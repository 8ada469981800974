"""Kubeflow components, shipped as `medrl.components`: one module per stage, each a lightweight Python component
whose body imports medrl and calls one core function (the imports inside the bodies are kfp's rule: it embeds each
function's source, so the image needs medrl installed, not this folder). Only stdlib, kfp and the pipeline's
parameter table (`medrl.kfp.parameters`) are imported at the top."""

from kfp import dsl

from medrl.kfp.parameters import DEFAULT_IMAGE


def component(func):
    """A component on the default image; the pipeline builder re-creates it on the image it compiles for."""
    return dsl.component(func, base_image=DEFAULT_IMAGE, install_kfp_package=False)


def on_image(task_component, image: str):
    """The same component running in `image`."""
    return dsl.component(task_component.python_func, base_image=image, install_kfp_package=False)
