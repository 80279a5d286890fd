"""LightningModules, one per task, selected by `task.name` from the TASKS registry."""
from medrun.tasks import adversarial, cascade, classification, segmentation  # noqa: F401  (registers)
from medrun.tasks.base import TASKS, ConfiguredTask

__all__ = ["TASKS", "ConfiguredTask"]
