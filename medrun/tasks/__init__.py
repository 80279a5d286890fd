"""LightningModules, one per task, selected by `task.name`."""
from medrun.registry import Registry

TASKS: Registry = Registry("task", "task.name")

from medrun.tasks import classification, segmentation  # noqa: E402,F401  (registers)
