"""configs/default.yaml, rendered from the option groups of utils/options.py
(``python -m utils.defaults_file > configs/default.yaml``; tests/test_config.py compares)."""

from __future__ import annotations

import sys

import yaml

from utils.options import GROUPS, section_options

HEADER = """\
# Defaults of every entry point (train_hybrid.py, eval_hybrid.py, eval_hybrid_seq.py, demo.py,
# predict.py, benchmark.py), GENERATED from the dataclasses of utils/options.py (each option's
# type, default and help): edit those, then run `python -m utils.defaults_file > configs/default.yaml`.
# Each top-level section is a group of flat options; a script reads `common`, `model` and its
# own section. Override with `--config my.yaml` (same layout, only the keys you change) and/or
# command-line flags (`--lr 1e-4`); booleans take true/false as well as the official True/False.
# The text after `#` on an option's line is its --help.
"""


def _scalar(value) -> str:
    """``value`` as one YAML scalar (quoted where YAML would read another type)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.replace("\n...\n", "").strip()


def render_defaults() -> str:
    """The text of configs/default.yaml."""
    lines = [HEADER]
    for section, cls in GROUPS.items():
        note = getattr(cls, "NOTE", "")
        lines.append(f"{section}:".ljust(26) + f"# {note}" if note else f"{section}:")
        for key, (default, help_text) in section_options(section).items():
            lines.append(f"  {key}: {_scalar(default)}".ljust(24) + f"  # {help_text}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render_defaults())
