"""One configuration for every entry point: YAML defaults + a YAML file + command-line flags."""

import argparse
import difflib
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
# Smallest accepted value of count and frequency options (checked at start-up, so that a
# 0 cannot crash a run after an epoch of work).
MIN_VALUES = {"frame_interval": 1, "num_workers": 0, "ndepths": 2, "epochs": 1,
              "batch_size": 1, "seq_len": 3, "summary_freq": 1, "save_freq": 1,
              "save_iters": 0, "max_iters": 0, "warmup_iters": 0, "clip_epoch": 0,
              "lwindow": 3, "memory_size": 1, "steps": 0, "iters": 1}
POSITIVE = ("lr", "depth_min", "depth_max", "clip_before", "clip_after", "min_depth_eval",
            "max_depth_eval")
RESNETS = (18, 34, 50, 101, 152)


class ConfigError(ValueError):
    """A configuration file or option value that cannot be used."""


class Options(argparse.Namespace):
    """The parsed options; ``given`` (not an option) names those set explicitly, on the
    command line or in ``--config``, as opposed to left at their defaults."""

    __slots__ = ("given",)


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


def _read_tree(path: str) -> tuple:
    """``({section: {option: default}}, {section: {option: help}})`` of a defaults file."""
    with open(path) as f:
        text = f.read()
    tree = yaml.safe_load(text)
    helps, section = {}, None
    for line in text.splitlines():
        start = _SECTION_LINE.match(line)
        if start:
            section = start.group(1)
            continue
        match = _HELP_LINE.match(line)
        if match and section:
            helps.setdefault(section, {})[match.group(1)] = match.group(2)
    return tree, helps


def read_defaults(sections, path: str = DEFAULTS):
    """The flat ``{option: default}`` of ``sections`` and ``{option: help}`` from the comments.

    Later sections override earlier ones, help texts included: each entry point's --help
    shows what its own section says (the demo's, for instance, only the demo's).
    """
    tree, section_helps = _read_tree(path)
    defaults, helps = {}, {}
    for section in sections:
        if section not in tree:
            raise KeyError(f"{path} has no section {section!r}")
        defaults.update(tree[section])
        helps.update(section_helps.get(section, {}))
    return defaults, helps


def build_parser(section: str, description: str = "",
                 suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser of one entry point; ``suppress_defaults`` leaves unset options out of the
    namespace (how :func:`load_config` tells given options from defaults)."""
    defaults, helps = read_defaults(BASE_SECTIONS + (section,))
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=argparse.SUPPRESS if suppress_defaults else None,
                        help="YAML file overriding configs/default.yaml (same layout)")
    for key, default in defaults.items():
        names = ["--" + key] + (["--" + key.replace("_", "-")] if "_" in key else [])
        kwargs = {"default": argparse.SUPPRESS if suppress_defaults else default,
                  "help": helps.get(key, "")}
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


def load_config(section: str, argv=None, description: str = "") -> Options:
    """Parse ``argv`` for the entry point that owns ``section`` of the defaults.

    Precedence: command line > ``--config`` file > ``configs/default.yaml``.

    Raises:
        ConfigError: a bad ``--config`` file (naming it, the section or key and the nearest
            valid name) or an option value out of range (see :func:`check_values`).
    """
    parser = build_parser(section, description)
    pre, _ = parser.parse_known_args(argv)
    overrides = _read_overrides(pre.config, parser, section) if pre.config else {}
    parser.set_defaults(**overrides)
    args = parser.parse_args(argv, namespace=Options())
    on_command_line, _ = build_parser(section, suppress_defaults=True).parse_known_args(argv)
    args.given = (set(vars(on_command_line)) | set(overrides)) - {"config"}
    if "LOCAL_RANK" in os.environ and hasattr(args, "local_rank"):
        args.local_rank = int(os.environ["LOCAL_RANK"])
    check_values(args)
    return args


def check_values(args) -> None:
    """Ranges every entry point needs, checked before any work (options absent are skipped).

    Raises:
        ConfigError naming the option and the value.
    """
    options = vars(args)
    for key, low in MIN_VALUES.items():
        if key in options and options[key] < low:
            raise ConfigError(f"--{key} must be at least {low}, got {options[key]}")
    for key in POSITIVE:
        if options.get(key) is not None and not options[key] > 0:
            raise ConfigError(f"--{key} must be positive, got {options[key]}")
    for low, high in (("depth_min", "depth_max"), ("min_depth_eval", "max_depth_eval")):
        if options.get(low) is not None and options.get(high) is not None \
                and not options[low] < options[high]:
            raise ConfigError(f"--{low} ({options[low]}) must be below --{high} "
                              f"({options[high]})")
    for key in ("height", "width"):
        if key in options and (options[key] < 128 or options[key] % 32):
            raise ConfigError(f"--{key} must be a multiple of 32 and at least 128, got "
                              f"{options[key]}")
    if "resnet" in options and options["resnet"] not in RESNETS:
        raise ConfigError(f"--resnet must be one of {RESNETS}, got {options['resnet']}")


def _nearest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_overrides(path: str, parser: argparse.ArgumentParser, section: str) -> dict:
    """The options of ``path`` that apply to ``section``, converted to the options' types.

    Every section and key is checked, also those of other entry points, so that a typo
    anywhere is an error rather than a silently ignored setting.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            tree = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path}: not valid YAML: {err}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: the top level must be sections (common:, "
                          f"model:, train:, ...) as in configs/default.yaml, got a "
                          f"{type(tree).__name__}")
    sections, _ = _read_tree(DEFAULTS)
    base = {key for name in BASE_SECTIONS for key in sections[name]}
    known = {a.dest: a for a in parser._actions}
    flat = {}
    for group, options in tree.items():
        if group not in sections:
            raise ConfigError(f"config file {path}: unknown section {group!r}"
                              f"{_nearest(str(group), sections)}; sections: "
                              f"{', '.join(sections)}")
        if options is None:
            continue
        if not isinstance(options, dict):
            raise ConfigError(f"config file {path}: section {group!r} must hold 'option: "
                              f"value' lines, got a {type(options).__name__}")
        valid = base | set(sections[group])
        for key, value in options.items():
            if key not in valid:
                elsewhere = [name for name, keys in sections.items() if key in keys]
                hint = (f" (it belongs in section {elsewhere[0]!r})" if elsewhere
                        else _nearest(str(key), valid))
                raise ConfigError(f"config file {path}: unknown option {key!r} in section "
                                  f"{group!r}{hint}")
            if group in BASE_SECTIONS + (section,):
                flat[key] = _convert(path, group, key, value, known[key])
    return flat


def _convert(path: str, group: str, key: str, value, action: argparse.Action):
    """``value`` as the option's type; a value of another type names the key and the file."""
    kind = action.type
    expected = {str2bool: "a boolean (true/false)", int: "an integer", float: "a number",
                str: "a string"}.get(kind, getattr(kind, "__name__", "a value"))
    if value is None:
        if action.default is None:
            return None
        bad = True
    elif isinstance(value, (list, dict)):
        bad = True
    elif kind is int:
        bad = isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
    elif kind is float:
        bad = isinstance(value, bool)
    else:
        bad = False
    if not bad:
        try:
            return kind(value) if kind else value
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            pass
    raise ConfigError(f"config file {path}: option {key!r} in section {group!r} must be "
                      f"{expected}, got {value!r}")


def save_config(args: argparse.Namespace, path: str) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    from utils.io import save_text

    save_text(yaml.safe_dump(vars(args), sort_keys=True), path)
