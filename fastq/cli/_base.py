"""The ``fastq`` command group and what its subcommands share (``Ctx``, ``FastqCommand``,
``FastqGroup``, error handling). The subcommands live in the other modules of this package and
register themselves on ``cli`` when ``fastq.cli`` loads them; see ``fastq.cli`` for the command."""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import click
import redis

from fastq._version import version_line
from fastq.errors import FastqError
from fastq.redis.facade import DEFAULT_URL
from fastq.redis.url import redact

__all__ = ["main", "cli"]

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 60.0
_LAST = {"url": DEFAULT_URL}  # the URL of the running command, for error messages
_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def safe_url(url: str) -> str:
    """The URL for messages: password masked; unparsable URLs are not shown at all."""
    try:
        return redact(url)
    except ValueError:
        return "<unparsable URL>"


def check_url(url: str) -> str:
    """Refuse URLs fastq cannot use (any form of fastq.connection; a database that is not a number...)."""
    from fastq.connection import ConnectionConfigError, parse_url

    try:
        parse_url(url)
    except ConnectionConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--redis-url'") from None
    return url


TLS_OPTIONS = ("tls_ca", "tls_cert", "tls_key", "tls_server_name")


class Ctx:
    """What the commands share: the Redis URL and lazily made Inspector / Client.

    ``settings`` holds ``redis_url`` and the ``tls_*`` values given before the subcommand (or
    by the environment); the same options after the subcommand replace them (``override``);
    ``resolve`` then makes ``url`` from them just before the command runs.
    """

    def __init__(self, url: str, settings: dict[str, Any] | None = None) -> None:
        self.url = url
        self.settings: dict[str, Any] = dict(settings or {"redis_url": url})
        self._inspector: Any = None
        self._client: Any = None
        self.timeout = COMMAND_TIMEOUT
        self.announced = False

    def override(self, name: str, value: Any) -> None:
        if value is not None:
            self.settings[name] = value

    def resolve(self) -> None:
        from fastq.connection import ConnectionConfigError, with_tls

        url = self.settings.get("redis_url") or DEFAULT_URL
        try:
            self.url = with_tls(url, *(self.settings.get(k) for k in TLS_OPTIONS))
        except ConnectionConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="'--tls-*'") from None
        _LAST["url"] = self.url

    @property
    def used_redis(self) -> bool:
        return self._inspector is not None or self._client is not None

    def _redis(self) -> Any:
        from fastq.redis.facade import sync_client

        return sync_client(self.url, socket_connect_timeout=min(CONNECT_TIMEOUT, self.timeout),
                           socket_timeout=self.timeout)

    @property
    def inspector(self) -> Any:
        if self._inspector is None:
            from fastq.inspect import Inspector

            self._inspector = Inspector(self._redis())
        return self._inspector

    @property
    def client(self) -> Any:
        if self._client is None:
            from fastq.client import Client

            self._client = Client(self._redis())
        return self._client

    def close(self) -> None:
        for owner in (self._inspector, self._client):
            if owner is not None:
                owner.redis.close()


REDIS_URL_HELP = ("Redis to use (env FASTQ_REDIS_URL; empty counts as unset): redis://[user:password@]host:port/db, "
                  "rediss://..., unix:///path, redis+sentinel://h1:p1,h2:p2/db?master=NAME, redis+cluster://h1:p1,h2:p2")
_TLS_HELP = {
    "tls_ca": "CA certificate(s) that signed the server's certificate (rediss:// URLs; env FASTQ_TLS_CA)",
    "tls_cert": "client certificate for mutual TLS (env FASTQ_TLS_CERT)",
    "tls_key": "private key of --tls-cert (env FASTQ_TLS_KEY)",
    "tls_server_name": "name the server's certificate must carry, when it is not the URL's host "
                       "(env FASTQ_TLS_SERVER_NAME)",
}
_TLS_METAVAR = {"tls_ca": "PEM", "tls_cert": "PEM", "tls_key": "PEM", "tls_server_name": "NAME"}


def _redis_url_value(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Check a --redis-url; a blank $FASTQ_REDIS_URL counts as unset."""
    if value is None:
        return None
    if not value.strip() and ctx.get_parameter_source(param.name or "") is click.core.ParameterSource.ENVIRONMENT:
        return DEFAULT_URL
    return check_url(value)


def _override(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """--redis-url / --tls-* after the subcommand: replace the ones given before it."""
    if value is None or ctx.resilient_parsing:
        return
    if param.name == "redis_url":
        value = check_url(value)
    state = ctx.find_object(Ctx)
    if state is not None:
        state.override(param.name or "", value)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_line("fastq"))
        ctx.exit(0)


def _version_option() -> click.Option:
    return click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
                        help="Show the fastq version and exit.")


def _redis_options() -> list[click.Option]:
    """The connection options of a subcommand (no env, no default: they only override)."""
    opts = [click.Option(["--redis-url", "-u"], metavar="URL", default=None, expose_value=False,
                         callback=_override,
                         help="Redis to use, as fastq --redis-url (given here, it overrides that one).")]
    for name in _TLS_HELP:
        flag = "--" + name.replace("_", "-")
        opts.append(click.Option([flag], metavar=_TLS_METAVAR[name], default=None, expose_value=False,
                                 callback=_override, help=f"As fastq {flag} (given here, it overrides that one)."))
    return opts


class FastqCommand(click.Command):
    """A ``fastq`` subcommand: takes --version, and (unless ``uses_redis=False``) the connection
    options, which may follow the subcommand; the Redis URL is settled just before it runs."""

    def __init__(self, *args: Any, uses_redis: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.uses_redis = uses_redis
        if uses_redis:
            self.params.extend(_redis_options())
        self.params.append(_version_option())

    def invoke(self, ctx: click.Context) -> Any:
        state = ctx.find_object(Ctx)
        if state is not None and self.uses_redis:
            state.resolve()
        return super().invoke(ctx)


class FastqGroup(click.Group):
    """A ``fastq`` command group: takes --version; aliases (``add_command(cmd, "alias")``) are
    shown next to their command in --help ("ls (alias: list)") instead of as commands of their own."""

    command_class = FastqCommand
    group_class = type  # subgroups are FastqGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_version_option())

    def aliases(self, cmd: click.Command) -> list[str]:
        return sorted(name for name, c in self.commands.items() if c is cmd and name != cmd.name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The commands under their own names (aliases still run: get_command finds them)."""
        return sorted(name for name, c in self.commands.items() if name == c.name or c.name not in self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            aliases = self.aliases(cmd)
            if aliases:
                name += f" (alias{'es' if len(aliases) > 1 else ''}: {', '.join(aliases)})"
            rows.append((name, cmd))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


@click.group(cls=FastqGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--redis-url", "-u", envvar="FASTQ_REDIS_URL", default=DEFAULT_URL, show_default=True,
              metavar="URL", callback=_redis_url_value,
              help=REDIS_URL_HELP + "; also accepted after the subcommand")
@click.option("--tls-ca", envvar="FASTQ_TLS_CA", metavar="PEM", default=None, help=_TLS_HELP["tls_ca"])
@click.option("--tls-cert", envvar="FASTQ_TLS_CERT", metavar="PEM", default=None, help=_TLS_HELP["tls_cert"])
@click.option("--tls-key", envvar="FASTQ_TLS_KEY", metavar="PEM", default=None, help=_TLS_HELP["tls_key"])
@click.option("--tls-server-name", envvar="FASTQ_TLS_SERVER_NAME", metavar="NAME", default=None,
              help=_TLS_HELP["tls_server_name"])
@click.pass_context
def cli(ctx: click.Context, redis_url: str, tls_ca: Any = None, tls_cert: Any = None, tls_key: Any = None,
        tls_server_name: Any = None) -> None:
    """Inspect and manage fastq / Go Asynq queues and tasks."""
    state = Ctx(redis_url, {"redis_url": redis_url, "tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key,
                            "tls_server_name": tls_server_name})
    _LAST["url"] = redis_url
    ctx.obj = state
    ctx.call_on_close(state.close)


def _fail(message: str, code: int = 1) -> None:
    if os.environ.get("FASTQ_DEBUG") and sys.exc_info()[0] is not None:
        raise  # FASTQ_DEBUG=1: show the traceback instead of the one-line message
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run ``cli`` and turn every error into one line."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="fastq", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _fail("aborted")
    except _NoArgsIsHelp as exc:  # `fastq` or `fastq task` alone: show the help
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        sys.exit(0)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except FastqError as exc:  # TLSHandshakeError and ClusterUnavailableError say what happened themselves
        _fail(str(exc))
    except (redis.ConnectionError, redis.TimeoutError) as exc:  # AuthenticationError too
        _fail(connection_failure(exc, _current_url()))
    except redis.ResponseError as exc:
        if isinstance(exc, redis.exceptions.NoPermissionError) or "can't run this command" in str(exc):
            _fail(f"the Redis user has no permission for this (ACL): {exc}")
        _fail(f"Redis answered with an error: {exc}")
    except redis.RedisError as exc:
        _fail(f"Redis error: {exc}")
    except (ValueError, TypeError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(0)


def connection_failure(exc: BaseException, url: str) -> str:
    """One line for a failed connection: what to fix when no retry can help (wrong password or
    user, unknown host, TLS: ``fastq.connection.fatal_reason``), else that Redis is unreachable."""
    from fastq.connection import fatal_reason

    reason = fatal_reason(exc)
    if reason is not None:
        return f"Redis at {safe_url(url)} {reason}"
    return f"cannot reach Redis at {safe_url(url)}: {exc}"


def _current_url() -> str:
    return _LAST["url"]

