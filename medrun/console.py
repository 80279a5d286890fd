"""What a run's console shows: medrun's progress and results, with known third-party noise filtered by message
and module (never a blanket ignore)."""
from __future__ import annotations

import logging
import warnings


def _no_known_notice(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "litlogger" not in message and not message.startswith("Loading `train_dataloader` to estimate")


def quiet_known_noise() -> None:
    """Drop Lightning's advertisement for its cloud logger, its notice that a one-cycle schedule loads the training
    data to count its steps, a deprecation inside Lightning itself, its advice
    to log more often when an epoch has fewer steps than log_every_n_steps (medrun logs every epoch's mean loss),
    and its CSV logger's notice on a resumed fold that earlier rows will be deleted (ResumableCSVLogger keeps
    them)."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if _no_known_notice not in logger.filters:
        logger.addFilter(_no_known_notice)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"pytorch_lightning\.utilities\._pytree")
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging "
                                              r"interval")
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty\. Previous log "
                                              r"files in this directory will be deleted")


def _no_root_handler(record: logging.LogRecord) -> bool:
    return not logging.getLogger().handlers


def show_medrun_messages() -> None:
    """medrun's own INFO lines (e.g. which data path a run uses) on stderr as `medrun: ...`; Python's default
    only shows warnings, so without this the run would not say it. Silent where the root logger has handlers
    (Hydra's job logging in a multirun): those already show the line, and write it to the job's log."""
    logger = logging.getLogger("medrun")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("medrun: %(message)s"))
        handler.addFilter(_no_root_handler)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
