"""Settings for a command from its flags, ``FASTQ_*`` environment variables and a TOML file.

Used by ``fastq-supervisor`` and ``fastq-scheduler`` (``fastq.cli.supervisor``,
``fastq.cli.scheduler``). Every parameter of the command's click command is a setting, and so
is its ``APP`` argument: the supervisor's flag ``--max-tasks-per-child`` is the environment
variable ``FASTQ_MAX_TASKS_PER_CHILD`` and the key ``max_tasks_per_child`` of the file's
``[supervisor]`` table. A new flag is therefore configurable in all three places without
touching this module. The scheduler reads ``FASTQ_SCHEDULER_<FLAG>`` and a ``[scheduler]``
table, so one environment and one file can configure both (``FASTQ_APP`` names the
supervisor's app, ``FASTQ_SCHEDULER_APP`` the scheduler's); a file may hold both tables, and
each command reads its own.

Precedence: flag > environment > file > built-in default. The file is the one
given with ``--config PATH`` or, without the flag, ``$FASTQ_CONFIG``.

Values are checked as strictly as the flags, and more strictly for types: in
the file ``processes = "4"`` is an error (a string where an integer belongs),
as are unknown keys and tables. Every error names the key (or variable) and
where it came from; the command exits with code 2 before it starts anything.
An empty (or blank) environment variable counts as unset.

``--print-config`` prints the effective settings as a TOML ``[supervisor]``
table, each line commented with where its value came from, with passwords in
URLs masked, and exits 0.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import click
from click.core import ParameterSource

from fastq.redis.facade import default_url
from fastq.redis.url import redact

__all__ = ["ConfigError", "Setting", "config_options", "settings_of", "load_file", "resolve", "render",
           "ENV_PREFIX", "CONFIG_ENV"]

ENV_PREFIX = "FASTQ_"
CONFIG_ENV = "FASTQ_CONFIG"
TABLES = ("supervisor", "scheduler")  # the commands that share a config file, one table each
_NOT_SETTINGS = {"help", "version", "config", "print_config"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_KIND_NAMES = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string",
               dict: "a queue list: a string like \"critical=6,default=3\" or a table like "
                     "{ critical = 6, default = 3 }"}


class ConfigError(ValueError):
    """A bad setting; the message names the key and where it came from."""


@dataclass
class Setting:
    """One configurable value: its click parameter and how it is spelled in each place."""

    param: click.Parameter
    kind: type
    prefix: str = ENV_PREFIX
    dest: str = field(init=False)

    def __post_init__(self) -> None:
        self.dest = self.param.name or ""

    @property
    def env(self) -> str:
        return self.prefix + self.dest.upper()

    @property
    def flag(self) -> str:
        """``--max-tasks-per-child`` for an option, ``APP`` for an argument."""
        if isinstance(self.param, click.Option):
            return max(self.param.opts, key=len)
        return self.param.human_readable_name

    @property
    def choices(self) -> Optional[Sequence[Any]]:
        return list(self.param.type.choices) if isinstance(self.param.type, click.Choice) else None


def config_options(table: str, env_prefix: str = ENV_PREFIX, example: str = "PROCESSES") -> list[click.Option]:
    """``--config`` and ``--print-config`` for a command that reads ``[table]``."""
    return [
        click.Option(["--config"], metavar="PATH", default=None,
                     help=f"TOML file with a [{table}] table of settings (default: ${CONFIG_ENV}); every flag also "
                          f"reads {env_prefix}<FLAG> (e.g. {env_prefix}{example}); precedence: flag > environment > "
                          "file > default"),
        click.Option(["--print-config"], is_flag=True,
                     help="print the effective settings (passwords masked) with where each came from, and exit"),
    ]


def settings_of(command: click.Command, env_prefix: str = ENV_PREFIX) -> dict[str, Setting]:
    """The settings of a command by parameter name, in the order of its --help."""
    from fastq.cli._types import kind_of

    out: dict[str, Setting] = {}
    for param in command.params:
        if not param.name or param.name in _NOT_SETTINGS or not param.expose_value:
            continue
        if param.multiple or (param.nargs != 1 and not (isinstance(param, click.Option) and param.is_flag)):
            continue  # lists are not settings
        out[param.name] = Setting(param, kind_of(param), env_prefix)
    return out


def _type_error(where: str, setting: Setting, value: Any) -> ConfigError:
    got = "a boolean" if isinstance(value, bool) else f"{type(value).__name__} {value!r}"
    if isinstance(value, (dict, list)):
        got = "a table" if isinstance(value, dict) else "an array"
    return ConfigError(f"{where}: expected {_KIND_NAMES[setting.kind]}, got {got}")


def _apply_type(where: str, setting: Setting, value: Any) -> Any:
    """Check a value's choices, then run the flag's own parser/validator on it."""
    choices = setting.choices
    if choices is not None:
        if value not in choices:
            raise ConfigError(f"{where}: invalid choice {value!r} (choose from {', '.join(map(repr, choices))})")
        return value
    if setting.kind is not bool:
        try:
            value = setting.param.type.convert(value, setting.param, None)
        except click.BadParameter as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
    return value

def convert_file_value(where: str, setting: Setting, value: Any) -> Any:
    """A TOML value, type-checked strictly (no strings for numbers), then validated like the flag."""
    kind = setting.kind
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and (math.isnan(value) or math.isinf(value)):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    elif kind is dict:
        ok = isinstance(value, (str, dict)) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    else:
        ok = isinstance(value, str)
    if not ok:
        raise _type_error(where, setting, value)
    return _apply_type(where, setting, value)


def convert_env_value(where: str, setting: Setting, text: str) -> Any:
    """An environment variable's text, parsed and validated like the flag."""
    if setting.kind is bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ConfigError(f"{where}: expected a boolean (1/0, true/false, yes/no, on/off), got {text!r}")
    return _apply_type(where, setting, text)


def _unknown(where: str, key: str, known: Sequence[str]) -> ConfigError:
    import difflib  # here: the error path only (a worker forks from the supervisor's imports)

    close = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def load_file(path: str, table: str, settings: dict[str, Setting]) -> dict[str, Any]:
    """The validated values of ``[table]`` in a TOML file, by destination name."""
    # Imported here, not at the top: only --config reads TOML, and workers fork with what the
    # supervisor imported.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]  # installed on 3.10 only
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: not UTF-8 ({exc.reason})") from None
    for key in data:
        if key != table and key not in TABLES:  # another command's table is left to it
            raise _unknown(f"config file {path}", key, list(dict.fromkeys([table, *TABLES])))
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: {table} must be a table ([{table}]), got {type(section).__name__}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in settings:
            raise _unknown(f"config file {path}: [{table}]", key, list(settings))
        values[key] = convert_file_value(f"config file {path}: [{table}] {key}", settings[key], value)
    return values


def load_env(settings: dict[str, Setting], environ: Optional[dict[str, str]] = None) -> dict[str, Any]:
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    for dest, setting in settings.items():
        text = environ.get(setting.env, "")
        if text.strip() != "":  # empty or blank: unset
            values[dest] = convert_env_value(f"environment variable {setting.env}", setting, text)
    return values


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(_mask(str(value)), ensure_ascii=False)


def _toml_key(key: Any) -> str:
    text = str(key)
    bare = text and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)
    return text if bare else json.dumps(text, ensure_ascii=False)


def _mask(text: str) -> str:
    return redact(text) if "://" in text else text


def render(table: str, settings: dict[str, Setting], values: dict[str, Any], sources: dict[str, str]) -> str:
    """The effective settings as TOML, passwords masked, each line commented with its source."""
    lines = ["# effective settings (flag > environment > config file > default); paste into a file for --config",
             f"[{table}]"]
    width = 0
    rows = []
    for dest in settings:
        value = values.get(dest)
        if value is None and dest == "redis_url":
            value = default_url()
        if any(word in dest for word in ("password", "secret", "token")) and value is not None:
            value = "***"
        text = f"# {dest} is not set" if value is None else f"{dest} = {_toml(value)}"
        rows.append((text, sources.get(dest, "default")))
        width = max(width, len(text))
    lines += [f"{text.ljust(width)}  # {source}" for text, source in rows]
    return "\n".join(lines) + "\n"


class Settings(dict[str, Any]):
    """The resolved settings (a dict), with ``given``: the names set by a flag, the environment or
    the file rather than left at their defaults."""

    given: frozenset[str] = frozenset()


def resolve(ctx: click.Context, table: str, required: Sequence[str] = (), env_prefix: str = ENV_PREFIX,
            environ: Optional[dict[str, str]] = None, out: Optional[Callable[[str], Any]] = None) -> Settings:
    """The command's settings: its parsed flags, with the environment and the config file under them.

    Call it from the command's callback (``--help`` and ``--version`` have been answered by
    then, even if a setting is bad). Raises ``ConfigError`` (one line naming the key) on a bad
    setting; prints the settings and exits 0 (``ctx.exit``) when ``--print-config`` is given.
    ``required`` names settings (such as an optional APP argument) that must come from somewhere.
    """
    environ = dict(os.environ) if environ is None else environ
    command = ctx.command
    settings = settings_of(command, env_prefix)
    path = ctx.params.get("config") or environ.get(CONFIG_ENV) or None
    file_values = load_file(path, table, settings) if path else {}
    env_values = load_env(settings, environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for dest, setting in settings.items():
        if ctx.get_parameter_source(dest) is ParameterSource.COMMANDLINE:
            values[dest], sources[dest] = ctx.params[dest], "command line"
        elif dest in env_values:
            values[dest], sources[dest] = env_values[dest], f"environment variable {setting.env}"
        elif dest in file_values:
            values[dest], sources[dest] = file_values[dest], f"config file {path}"
        else:
            values[dest], sources[dest] = ctx.params.get(dest), "default"
    if ctx.params.get("print_config"):
        (out or sys.stdout.write)(render(table, settings, values, sources))
        ctx.exit(0)
    for dest in required:
        if values.get(dest) in (None, ""):
            setting = settings[dest]
            raise ConfigError(f"{setting.flag} is required: give it on the command line, in {setting.env} or as "
                              f"{dest} in the [{table}] table of the --config file")
    resolved = Settings(values)
    resolved.given = frozenset(dest for dest, source in sources.items() if source != "default")
    return resolved
