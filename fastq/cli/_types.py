"""click parameter types of the long-running commands (``fastq-supervisor``, ``fastq-scheduler``,
``fastq-demo``): text from the command line, an environment variable or a config file becomes
a checked value, by the rules of ``fastq._validate``.

Each type's ``kind`` is the Python type of its values (what a TOML file must hold for it: see
``fastq.config_file``). An error is the bare rule ("must be at least 1, got 0"); click names the
option, ``fastq.config_file`` the variable or key.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import click

from fastq import _validate
from fastq.errors import InvalidOptionError

__all__ = ["IntAtLeast", "NumberAtLeast", "PositiveSeconds", "Port", "Queues", "TimeZone", "kind_of"]


if TYPE_CHECKING:  # generic for type checkers (click >= 8.3), a plain class at run time for older ones
    _ParamType = click.ParamType[Any]
else:
    _ParamType = click.ParamType


class _Checked(_ParamType):
    """Parse the text (``parse``), then check the value (``check``); both failures name the rule."""

    kind: type = str
    expected = "a value"

    def parse(self, text: str) -> Any:
        return text

    def check(self, value: Any) -> Any:
        return value

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if isinstance(value, str) and self.kind is not str:
            try:
                value = self.parse(value.strip())
            except ValueError:
                self.fail(f"expected {self.expected}, got {value!r}", param, ctx)
        try:
            return self.check(value)
        except InvalidOptionError as exc:
            self.fail(str(exc), param, ctx)


class IntAtLeast(_Checked):
    kind = int
    expected = "an integer"

    def __init__(self, minimum: int) -> None:
        self.minimum = minimum
        self.name = f"integer >= {minimum}"

    def parse(self, text: str) -> int:
        return int(text)

    def check(self, value: Any) -> int:
        return _validate.int_at_least("", value, self.minimum)


class NumberAtLeast(_Checked):
    kind = float

    def __init__(self, minimum: float = 0.0, unit: str = "seconds") -> None:
        self.minimum = minimum
        self.expected = f"a number of {unit}"
        self.name = f"{unit} >= {minimum:g}"

    def parse(self, text: str) -> float:
        return float(text)

    def check(self, value: Any) -> float:
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return _validate.number_at_least("", value, self.minimum)


class PositiveSeconds(_Checked):
    kind = float
    expected = "a number of seconds"
    name = "seconds > 0"

    def parse(self, text: str) -> float:
        return float(text)

    def check(self, value: Any) -> float:
        return _validate.positive_seconds("", value)


class Port(_Checked):
    kind = int
    expected = "a port number"
    name = "port"

    def parse(self, text: str) -> int:
        return int(text)

    def check(self, value: Any) -> int:
        return _validate.port("", value)


class Queues(_Checked):
    """``critical=6,default=3`` (or, from a file, a table or an array of names) -> {queue: weight}."""

    kind = dict
    name = "queues"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        from fastq.server.config import parse_queues

        try:
            return parse_queues(value)
        except InvalidOptionError as exc:
            self.fail(str(exc), param, ctx)


class TimeZone(_Checked):
    """An IANA time zone name, checked now (``fastq.scheduler.cron.load_zone``); the value stays the name."""

    name = "time zone"

    def check(self, value: Any) -> str:
        from fastq.errors import TimeZoneError
        from fastq.scheduler.cron import load_zone

        try:
            load_zone(value)
        except TimeZoneError as exc:
            raise InvalidOptionError(str(exc)) from None
        return str(value)


def kind_of(param: click.Parameter) -> type:
    """The Python type of a parameter's values: bool for flags, the type's ``kind``, else str."""
    if isinstance(param, click.Option) and param.is_flag:
        return bool
    kind = getattr(param.type, "kind", None)
    if isinstance(kind, type):
        return kind
    if isinstance(param.type, click.types.IntParamType):
        return int
    return float if isinstance(param.type, click.types.FloatParamType) else str
