"""medrun: config-driven experiment runner for medical image deep learning."""
from medrun.api import build_datamodule, build_model, compose, train

__all__ = ["compose", "build_model", "build_datamodule", "train"]
__version__ = "0.1.0"
