"""Which packages the distribution holds; everything else is in pyproject.toml.

`components/` and `pipelines/` stay at the top of the repository but ship as `medrl.components` and
`medrl.pipelines`, so an installed wheel compiles and runs the pipeline without a checkout. pyproject.toml's
`packages.find` cannot add packages from outside its `where`, and a hand-kept list would miss new subpackages
(found as namespace packages, as pyproject's `find` does, so data folders such as presets/ are packages too).
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages("src", include=["medrl*"]),
        "medrl.components",
        "medrl.pipelines",
        "medrl.pipelines.compiled",
    ],
    package_dir={"": "src", "medrl.components": "components", "medrl.pipelines": "pipelines"},
)
