"""Package discovery, which pyproject.toml cannot express next to the configs/ remapping: every medrun
subpackage is found, so a new one cannot miss the wheel, and the top-level configs/ ships as medrun.configs."""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["medrun", "medrun.*"]), "medrun.configs"])
