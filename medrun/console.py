"""What a run's console shows: medrun's progress and results, with known third-party noise filtered by message
and module (never a blanket ignore)."""
from __future__ import annotations

import logging
import warnings


def _no_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def quiet_known_noise() -> None:
    """Drop Lightning's advertisement for its cloud logger and a deprecation inside Lightning itself."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if _no_litlogger_tip not in logger.filters:
        logger.addFilter(_no_litlogger_tip)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"pytorch_lightning\.utilities\._pytree")
