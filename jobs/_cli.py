"""What every job's command line shares: logging, and one clear line instead of a traceback."""

from __future__ import annotations

import argparse
import gc
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from pipeline.core.errors import ConfigError, VaezipError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown in --help, except a default of None (an option that is off, or whose
    default its help text states): "(default: None)" says nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse that shows defaults in --help, exits 2 with one line on a bad argument, and
    takes ``--config FILE`` (YAML or TOML) as an alternative to flags.

    A config file's keys are the long option names (``zstd-level`` or ``zstd_level``); its
    values become the defaults, so a flag on the command line still wins. Unknown keys, and
    values outside an option's choices, are errors.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(**kwargs)
        self.add_argument(
            "--config",
            help="YAML (.yaml/.yml) or TOML (.toml) file of option "
            "values, keyed by long option name; command-line flags win",
        )

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        argv = self._negative_values(list(sys.argv[1:] if args is None else args))
        path = _config_path(argv)
        if path is not None:
            self._apply_config(path, load_config(path))
        return super().parse_args(argv, namespace)

    def _negative_values(self, argv: list[str]) -> list[str]:
        """``--value-range -1500,2300`` as ``--value-range=-1500,2300``: argparse takes a value
        that starts with ``-`` and is not a plain number for an option of its own."""
        out: list[str] = []
        i = 0
        while i < len(argv):
            action = self._option_string_actions.get(argv[i])
            # an option that takes one value (store), not a flag (store_true: nargs 0)
            takes_one = action is not None and action.nargs is None and action.const is None
            if takes_one and i + 1 < len(argv) and re.match(r"-\d", argv[i + 1]):
                out.append(f"{argv[i]}={argv[i + 1]}")
                i += 2
                continue
            out.append(argv[i])
            i += 1
        return out

    def _apply_config(self, path: str, values: dict) -> None:
        actions = {a.dest: a for a in self._actions if a.option_strings and a.dest != "help"}
        for key, value in values.items():
            dest = str(key).replace("-", "_")
            action = actions.get(dest)
            if action is None or dest == "config":
                raise ConfigError(f"{path}: unknown option {key!r}")
            if isinstance(value, str) and action.type is not None:
                try:
                    value = action.type(value)  # type: ignore[operator]
                except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
                    raise ConfigError(f"{path}: {key}: {err}") from err
            if isinstance(value, list) and action.type in (int_tuple, float_tuple):
                value = tuple(value)
            if action.choices is not None and value not in action.choices:
                raise ConfigError(f"{path}: {key}: {value!r} is not one of {list(action.choices)}")
            action.default = value
            action.required = False


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def load_config(path: str) -> dict:
    """A YAML or TOML file of option values (a mapping)."""
    from pipeline.core import storage

    try:
        text = storage.read_bytes(path).decode()
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} not found") from err
    try:
        if path.endswith(".toml"):
            data = tomllib.loads(text)
        elif path.endswith((".yaml", ".yml")):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {path}: use .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} does not parse: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option names to values")
    return data


def save_resolved(args: argparse.Namespace, uri: str) -> None:
    """Every option's final value, as YAML that ``--config`` reads back."""
    from pipeline.core import storage

    values = {
        k.replace("_", "-"): list(v) if isinstance(v, tuple) else v
        for k, v in sorted(vars(args).items())
        if k != "config"
    }
    storage.write_bytes(uri, yaml.safe_dump(values, sort_keys=True).encode())


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        return main(argv)
    except VaezipError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the driver's own disk: full, read-only, a name too long
        logging.getLogger("jobs").debug("driver I/O error", exc_info=True)
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        # Release Arrow readers and their I/O threads while Arrow is still whole: left to the
        # interpreter's last teardown, one can abort the process after its work is done
        # ("terminate called without an active exception", apache/arrow#34314).
        gc.collect()


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def float_tuple(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def add_sample_shape(group: Any) -> None:
    """``--sample-shape``: how a .npy/.npz array is read, the same in every job."""
    group.add_argument(
        "--sample-shape",
        choices=("rows", "whole"),
        default="rows",
        help=".npy/.npz: rows (each row of the array is a sample: a stack of images, a table of "
        "vectors) or whole (the array is one sample: a raster, a scan, an image)",
    )
