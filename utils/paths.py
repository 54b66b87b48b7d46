"""Where outputs may go: never onto, into or around a run's inputs."""

from __future__ import annotations

import os
from pathlib import Path


class OverlappingPathsError(ValueError):
    """An output path is, contains or lies inside an input path."""


def _real(path) -> Path:
    # realpath follows links (a link to the input is the input) and works for paths
    # that do not exist yet (an output folder about to be made)
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def check_apart(output, *inputs) -> None:
    """Refuse an ``output`` that is, contains or lies inside one of ``inputs``.

    Links are followed, so a link to an input counts as that input. A clean-up of the
    output (a recomputation, ``--overwrite``) could otherwise delete the input.

    Raises:
        OverlappingPathsError naming both paths as given.
    """
    out = _real(output)
    for given in inputs:
        source = _real(given)
        if out == source:
            relation = "is"
        elif out.is_relative_to(source):
            relation = "lies inside"
        elif source.is_relative_to(out):
            relation = "contains"
        else:
            continue
        resolved = f" (resolved: {out} and {source})" if (
            str(out), str(source)) != (str(output), str(given)) else ""
        raise OverlappingPathsError(f"output {output} {relation} the input {given}{resolved}; "
                                    f"choose an output outside the input")
