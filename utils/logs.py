"""Logging set-up: one format, only the main process talks."""

import logging
import sys


def setup_logging(level: str = "INFO", is_main: bool = True) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()) if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
        stream=sys.stderr, force=True)
