"""One configuration for every entry point: the option dataclasses, a ``--config`` YAML
file and command-line flags.

The options, their types, defaults and --help texts are the dataclasses of
utils/options.py (one group per section); ``configs/default.yaml`` is generated from them
(``python -m utils.defaults_file > configs/default.yaml``) and tests/test_config.py checks that
it is up to date. Precedence: command line > ``--config`` file > those defaults.

:func:`load_config` returns :class:`Options`: the flat namespace argparse gives
(``args.lr``, as the official scripts had), whose typed groups (``args.model`` is a
:class:`~utils.options.ModelOptions`, ``args.train`` a ``TrainOptions``, ...) are what
the functions below the entry points take.
"""

import argparse
import dataclasses
import difflib
import os
import typing

import yaml

from utils.options import (BASE_SECTIONS, DEVELOPER_OPTIONS, GROUPS, MIN_SIZE,
                           MIN_WINDOW_FRAMES, REMOVED, RESNET_DEPTHS, SIZE_MULTIPLE,
                           ignored_notes, section_options)

DEFAULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "configs", "default.yaml")
# Smallest accepted value of count and frequency options (checked at start-up, so that a
# 0 cannot crash a run after an epoch of work).
MIN_VALUES = {"frame_interval": 1, "num_workers": 0, "ndepths": 2, "epochs": 1,
              "batch_size": 1, "seq_len": MIN_WINDOW_FRAMES, "summary_freq": 1, "save_freq": 1,
              "save_iters": 0, "keep_checkpoints": 0, "max_iters": 0, "warmup_iters": 0, "clip_epoch": 0,
              "lwindow": MIN_WINDOW_FRAMES, "memory_size": 1, "steps": 0, "iters": 1,
              "batch_sequences": 1}
POSITIVE = ("lr", "depth_min", "depth_max", "clip_before", "clip_after", "min_depth_eval",
            "max_depth_eval")


class ConfigError(ValueError):
    """A configuration file or option value that cannot be used."""


def group_of(args, cls):
    """The typed group ``cls`` (e.g. ``ModelOptions``) of the flat options ``args``: a
    frozen copy of their current values."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def set_group(args, opts) -> None:
    """Write the group ``opts`` back into the flat options ``args``."""
    for f in dataclasses.fields(opts):
        setattr(args, f.name, getattr(opts, f.name))


def _group_property(section: str) -> property:
    return property(lambda self: self.group(section),
                    doc=f"The ``{section}`` options as a {GROUPS[section].__name__}.")


class Options(argparse.Namespace):
    """The parsed options of the entry point that owns ``section``, flat; its typed groups
    are ``args.common``, ``args.model`` and its own (``args.train``, ``args.eval``, ...).

    ``given`` (not an option) names the options set explicitly, on the command line or in
    ``--config``, as opposed to left at their defaults.
    """

    __slots__ = ("given", "section")

    def group(self, section: str):
        """The options of ``section`` as its dataclass (a copy: set options on ``self``)."""
        if section not in BASE_SECTIONS + (self.section,):
            raise AttributeError(f"the {self.section} options have no {section!r} group")
        return group_of(self, GROUPS[section])

    common = _group_property("common")
    model = _group_property("model")
    train = _group_property("train")
    eval = _group_property("eval")
    demo = _group_property("demo")
    predict = _group_property("predict")
    export = _group_property("export")
    benchmark = _group_property("benchmark")


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


def _unwrap_optional(annotation) -> tuple:
    """``(X, True)`` for ``Optional[X]``, else ``(annotation, False)``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return annotation, False


def _parse_type(annotation):
    """The argparse ``type`` of a field's annotation (``Optional[X]`` also takes None;
    ``list[X]``: the type of one item)."""
    inner, optional = _unwrap_optional(annotation)
    if _is_list(inner):
        return typing.get_args(inner)[0]
    if optional:
        return _optional(inner)
    return str2bool if inner is bool else inner


def _is_list(annotation) -> bool:
    """``list[X]`` or ``Optional[list[X]]``: an option taking one or more values."""
    return typing.get_origin(_unwrap_optional(annotation)[0]) is list


def read_defaults(sections):
    """The flat ``{option: default}`` and ``{option: help}`` of ``sections``.

    Later sections override earlier ones, help texts included: each entry point's --help
    shows what its own section says (the demo's, for instance, only the demo's).
    """
    defaults, helps = {}, {}
    for section in sections:
        if section not in GROUPS:
            raise KeyError(f"no option section {section!r}; sections: {', '.join(GROUPS)}")
        for key, (default, help_text) in section_options(section).items():
            defaults[key], helps[key] = default, help_text
    return defaults, helps


class _Removed(argparse.Action):
    """An official flag that was removed: giving it is an error naming what replaced it."""

    def __call__(self, parser, namespace, values, option_string=None):
        raise ConfigError(f"{option_string} was removed: {self.const}")


def build_parser(section: str, description: str = "",
                 suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser of one entry point; ``suppress_defaults`` leaves unset options out of the
    namespace (how :func:`load_config` tells given options from defaults)."""
    sections = BASE_SECTIONS + (section,)
    defaults, helps = read_defaults(sections)
    types = {}
    for name in sections:
        types.update(typing.get_type_hints(GROUPS[name]))
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=argparse.SUPPRESS if suppress_defaults else None,
                        help="YAML file overriding configs/default.yaml (same layout)")
    for key, default in defaults.items():
        names = ["--" + key] + (["--" + key.replace("_", "-")] if "_" in key else [])
        kwargs = {"default": argparse.SUPPRESS if suppress_defaults else default,
                  "help": argparse.SUPPRESS if key in DEVELOPER_OPTIONS else helps[key],
                  "type": _parse_type(types[key])}
        if kwargs["type"] is str2bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        elif _is_list(types[key]):
            kwargs.update(nargs="+")
        parser.add_argument(*names, dest=key, **kwargs)
    for key, note in REMOVED.get(section, {}).items():
        parser.add_argument("--" + key, action=_Removed, default=argparse.SUPPRESS, const=note,
                            help=f"removed: {note}")
    return parser


def load_config(section: str, argv=None, description: str = "") -> Options:
    """Parse ``argv`` for the entry point that owns ``section`` of the defaults.

    Precedence: command line > ``--config`` file > the defaults (utils/options.py).

    Raises:
        ConfigError: a bad ``--config`` file (naming it, the section or key and the nearest
            valid name), a removed official flag, or an option value out of range (see
            :func:`check_values`).
    """
    parser = build_parser(section, description)
    pre, _ = parser.parse_known_args(argv)
    overrides = _read_overrides(pre.config, parser, section) if pre.config else {}
    parser.set_defaults(**overrides)
    args = parser.parse_args(argv, namespace=Options())
    args.section = section
    on_command_line, _ = build_parser(section, suppress_defaults=True).parse_known_args(argv)
    args.given = (set(vars(on_command_line)) | set(overrides)) - {"config"}
    if "LOCAL_RANK" in os.environ and hasattr(args, "local_rank"):
        args.local_rank = int(os.environ["LOCAL_RANK"])
    check_values(args)
    return args


def log_ignored(args: Options, log) -> None:
    """Say, for each given option kept only for the official command line, what replaced
    it (``ignored`` in utils/options.py)."""
    notes = {}
    for section in BASE_SECTIONS + (args.section,):
        notes.update(ignored_notes(section))
    for key in sorted(set(notes) & args.given):
        log.info("--%s %s is accepted and ignored: %s", key, getattr(args, key), notes[key])


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
        if key in options and (options[key] < MIN_SIZE or options[key] % SIZE_MULTIPLE):
            raise ConfigError(f"--{key} must be a multiple of {SIZE_MULTIPLE} and at least "
                              f"{MIN_SIZE}, got {options[key]}")
    if "resnet" in options and options["resnet"] not in RESNET_DEPTHS:
        raise ConfigError(f"--resnet must be one of {RESNET_DEPTHS}, got {options['resnet']}")


def _nearest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_tree(path: str):
    """The sections of a ``--config`` file (None for an empty file)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            tree = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path}: not valid YAML: {err}") from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: the top level must be sections (common:, "
                          f"model:, train:, ...) as in configs/default.yaml, got a "
                          f"{type(tree).__name__}")
    return tree


def _read_overrides(path: str, parser: argparse.ArgumentParser, section: str) -> dict:
    """The options of ``path`` that apply to ``section``, converted to the options' types.

    Every section and key is checked, also those of other entry points, so that a typo
    anywhere is an error rather than a silently ignored setting.
    """
    tree = _read_tree(path)
    if tree is None:
        return {}
    sections = {name: section_options(name) for name in GROUPS}
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
            if key in REMOVED.get(group, {}):
                raise ConfigError(f"config file {path}: option {key!r} in section {group!r} "
                                  f"was removed: {REMOVED[group][key]}")
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
    if action.nargs == "+" and value is not None:  # one value or a list of them
        expected += " or a list of them"
        values = value if isinstance(value, list) else [value]
        if values and all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                          for v in values):
            return [kind(v) for v in values]
        bad = True
    elif value is None:
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
