"""The packages are found, not listed (a hand-kept list once shipped a wheel without `gateway.datasets`).

`setup.py` only because pyproject's `packages.find` cannot also ship `prompts/`, which sits at the top level
(versioned with the code) and installs as `gateway.prompts` (see `package-dir` in pyproject.toml)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["gateway", "gateway.*", "console", "console.*"]), "gateway.prompts"])
