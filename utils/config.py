"""One configuration for every entry point: YAML defaults + a YAML file + command-line flags."""

import argparse
import os
import re

import yaml

DEFAULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "configs", "default.yaml")
BASE_SECTIONS = ("common", "model")
# Options whose default is null but whose values are not strings.
NULL_DEFAULT_TYPES = {"min_depth_eval": float, "max_depth_eval": float}
_HELP_LINE = re.compile(r"^\s+(\w+):[^#]*#\s*(.+)$")
_SECTION_LINE = re.compile(r"^(\w+):")


def str2bool(value) -> bool:
    """Real booleans that still accept the official ``"True"``/``"False"`` strings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def _optional(kind):
    def parse(value):
        return None if str(value).lower() in ("", "none", "null") else kind(value)
    parse.__name__ = kind.__name__
    return parse


def read_defaults(sections, path: str = DEFAULTS):
    """The flat ``{option: default}`` of ``sections`` and ``{option: help}`` from the comments."""
    with open(path) as f:
        text = f.read()
    tree = yaml.safe_load(text)
    defaults = {}
    for section in sections:
        if section not in tree:
            raise KeyError(f"{path} has no section {section!r}")
        defaults.update(tree[section])
    # Help texts per section, so that a key several sections share gets its own section's.
    by_section, section = {}, None
    for line in text.splitlines():
        top = _SECTION_LINE.match(line)
        if top:
            section = top.group(1)
        elif (match := _HELP_LINE.match(line)):
            by_section.setdefault(section, {})[match.group(1)] = match.group(2)
    helps = {}
    for name in sections:
        helps.update(by_section.get(name, {}))
    return defaults, helps


def build_parser(section: str, description: str = "") -> argparse.ArgumentParser:
    defaults, helps = read_defaults(BASE_SECTIONS + (section,))
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None,
                        help="YAML file overriding configs/default.yaml (same layout)")
    for key, default in defaults.items():
        names = ["--" + key] + (["--" + key.replace("_", "-")] if "_" in key else [])
        kwargs = {"default": default, "help": helps.get(key, "")}
        if isinstance(default, bool):
            kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        elif isinstance(default, (int, float)):
            kwargs["type"] = type(default)
        elif isinstance(default, str):
            kwargs["type"] = str
        else:  # null default: may be left unset with "None"
            kwargs["type"] = _optional(NULL_DEFAULT_TYPES.get(key, str))
        parser.add_argument(*names, dest=key, **kwargs)
    return parser


def load_config(section: str, argv=None, description: str = "") -> argparse.Namespace:
    """Parse ``argv`` for the entry point that owns ``section`` of the defaults.

    Precedence: command line > ``--config`` file > ``configs/default.yaml``.
    """
    parser = build_parser(section, description)
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**_read_overrides(pre.config, parser, section))
    args = parser.parse_args(argv)
    if "LOCAL_RANK" in os.environ and hasattr(args, "local_rank"):
        args.local_rank = int(os.environ["LOCAL_RANK"])
    return args


def _read_overrides(path: str, parser: argparse.ArgumentParser, section: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path) as f:
        tree = yaml.safe_load(f) or {}
    known = {a.dest: a for a in parser._actions}
    flat = {}
    for group, options in tree.items():
        if group not in BASE_SECTIONS + (section,):
            continue  # another entry point's section
        for key, value in (options or {}).items():
            if key not in known:
                raise ValueError(f"{path}: unknown option {key!r} in section {group!r}")
            action = known[key]
            flat[key] = action.type(value) if value is not None and action.type else value
    return flat


def save_config(args: argparse.Namespace, path: str) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    from utils.io import save_text

    save_text(yaml.safe_dump(vars(args), sort_keys=True), path)
