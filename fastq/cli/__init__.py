"""The ``fastq`` command: inspect and manage queues, tasks, servers and periodic tasks.

Modelled on Go Asynq's ``asynq`` CLI (same data, same answers). Tables by default,
``--json`` for scripts. ``--redis-url`` (or ``$FASTQ_REDIS_URL``) picks the Redis;
its password is never printed. Any error is one line on stderr and a non-zero exit
code (1 for errors found at run time, 2 for bad usage), never a traceback
(``FASTQ_DEBUG=1`` shows it).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import click
import redis

from fastq._redis import DEFAULT_URL, redact
from fastq.errors import FastqError

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


class Ctx:
    """What the commands share: the Redis URL and lazily made Inspector / Client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._inspector: Any = None
        self._client: Any = None
        self.timeout = COMMAND_TIMEOUT

    def _redis(self) -> Any:
        from fastq._redis import sync_client

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--redis-url", "-u", envvar="FASTQ_REDIS_URL", default=DEFAULT_URL, show_default=True,
              metavar="URL", callback=lambda _c, _p, v: check_url(v),
              help="Redis to inspect (env FASTQ_REDIS_URL): redis://[user:password@]host:port/db, rediss://..., "
                   "unix:///path, redis+sentinel://h1:p1,h2:p2/db?master=NAME, redis+cluster://h1:p1,h2:p2")
@click.option("--tls-ca", envvar="FASTQ_TLS_CA", metavar="PEM", default=None,
              help="CA certificate(s) that signed the server's certificate (rediss:// URLs; env FASTQ_TLS_CA)")
@click.option("--tls-cert", envvar="FASTQ_TLS_CERT", metavar="PEM", default=None,
              help="client certificate for mutual TLS (env FASTQ_TLS_CERT)")
@click.option("--tls-key", envvar="FASTQ_TLS_KEY", metavar="PEM", default=None,
              help="private key of --tls-cert (env FASTQ_TLS_KEY)")
@click.option("--tls-server-name", envvar="FASTQ_TLS_SERVER_NAME", metavar="NAME", default=None,
              help="name the server's certificate must carry, when it is not the URL's host")
@click.pass_context
def cli(ctx: click.Context, redis_url: str, tls_ca: Any = None, tls_cert: Any = None, tls_key: Any = None,
        tls_server_name: Any = None) -> None:
    """Inspect and manage fastq / Go Asynq queues and tasks."""
    from fastq.connection import ConnectionConfigError, with_tls

    try:
        redis_url = with_tls(redis_url, tls_ca, tls_cert, tls_key, tls_server_name)
    except ConnectionConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--tls-*'") from None
    state = Ctx(redis_url)
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


from fastq.cli import _dev, _misc, _queue, _task  # noqa: E402,F401  (registers the commands)
from fastq.cli import _dashboard  # noqa: E402,F401  (fastq dashboard)
