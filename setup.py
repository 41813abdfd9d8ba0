"""The package list, which pyproject.toml cannot state: every package of sip_train and of the hydra_plugins
namespace (Hydra finds plugins there), plus sip_train.conf, which is the repository's top-level conf/."""
from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["sip_train", "sip_train.*", "hydra_plugins.*"],
                                         exclude=["*.__pycache__"]), "sip_train.conf"])
