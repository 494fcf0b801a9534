"""Package discovery, which pyproject.toml alone cannot express here: the top-level
``models/`` folder installs as ``codenn_convert.models`` (see pyproject.toml), so every
package under it, including a family folder added later, is found and renamed here. All
other metadata lives in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["codenn_convert", "codenn_convert.*"]),
        "codenn_convert.models",
        *(f"codenn_convert.models.{name}" for name in find_packages("models")),
    ],
)
