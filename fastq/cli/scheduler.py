"""``fastq-scheduler APP``: run a Scheduler, a PeriodicTaskManager or a config provider in its own process.

APP is ``module:attribute`` (the attribute may be dotted; the current
directory is on ``sys.path``). Every flag (and APP) can also come from
``FASTQ_SCHEDULER_<FLAG>`` or the ``[scheduler]`` table of a ``--config`` TOML file
(``fastq.config_file``). A bad APP, flag or setting exits with code 2 and one
line on stderr; a provider whose first ``get_configs()`` fails exits with code 1, and so
does a Redis that refuses the scheduler for good at start (wrong password or user, unknown
host, TLS failure: ``fastq.connection.preflight``). A Redis that is only unreachable for now
is retried. What runs is ``fastq.scheduler.app.run_scheduler``.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any, Optional, Sequence

import click

from fastq import config_file
from fastq.cli._script import CONTEXT, Fail, run, version_option
from fastq.cli._types import PositiveSeconds, TimeZone
from fastq.redis.facade import default_url

__all__ = ["command", "main", "ENV_PREFIX"]

PROG = "fastq-scheduler"
ENV_PREFIX = "FASTQ_SCHEDULER_"  # FASTQ_APP etc. belong to fastq-supervisor
PREFLIGHT_TIMEOUT = 3.0  # seconds for the start-up PING (connect, TLS handshake, reply)

log = logging.getLogger("fastq.scheduler")


@click.command(PROG, context_settings=CONTEXT, params=[version_option(PROG)],
               help="Enqueue periodic tasks: run APP, a fastq.Scheduler, a fastq.PeriodicTaskManager "
                    "or a config provider, until SIGTERM/SIGINT.")
@click.argument("app", metavar="APP", required=False, default=None)
@click.option("--redis-url", default=None, metavar="URL",
              help=f"Redis URL (default: the APP's own, else $FASTQ_REDIS_URL or {default_url()})")
@click.option("--location", type=TimeZone(), default=None, metavar="ZONE",
              help="IANA time zone of cron specs without CRON_TZ= (default: the APP's own, else UTC)")
@click.option("--heartbeat-interval", type=PositiveSeconds(), default=None, metavar="SECONDS",
              help="seconds between writes of the entries to Redis (default: the APP's own, else 10)")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", help="log level (default: INFO)")
@click.pass_context
def command(ctx: click.Context, /, **_params: Any) -> int:
    try:  # flag > env > file > default
        args = config_file.resolve(ctx, "scheduler", required=["app"], env_prefix=ENV_PREFIX)
    except config_file.ConfigError as exc:
        raise Fail(str(exc), 2) from None
    from fastq import logging as fastq_logging
    from fastq.errors import AppImportError, ConfigProviderError, InvalidOptionError, TimeZoneError
    from fastq.redis.facade import sync_client
    from fastq.scheduler.app import as_service, run_scheduler

    fastq_logging.setup(args["log_level"])
    if args["redis_url"] is not None:
        try:
            sync_client(args["redis_url"]).close()  # validates the URL; connects only when used
        except ValueError as exc:
            raise Fail(str(exc), 2) from None
    try:
        service = as_service(args["app"])
    except AppImportError as exc:
        raise Fail(str(exc), 2) from None
    if not _preflight(service, args["redis_url"]):
        return 0  # SIGTERM / SIGINT during the check
    try:
        return run_scheduler(service, args["redis_url"], location=args["location"],
                             heartbeat_interval=args["heartbeat_interval"])
    except (InvalidOptionError, TimeZoneError) as exc:
        raise Fail(str(exc), 2) from None
    except ConfigProviderError as exc:
        raise Fail(str(exc), 1) from None


for _param in config_file.config_options("scheduler", ENV_PREFIX, example="LOCATION"):
    command.params.append(_param)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``fastq-scheduler`` console script."""
    return run(command, argv, PROG)


class _Stop(BaseException):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def _redis_target(service: Any, redis_url: Optional[str]) -> Any:
    """The Redis the scheduler will use: --redis-url, else the APP's own (None: a client the APP built)."""
    from fastq import connection
    from fastq.scheduler import Scheduler

    if redis_url is not None:
        return redis_url
    scheduler = service if isinstance(service, Scheduler) else getattr(service, "scheduler", None)
    own = getattr(scheduler, "_redis_arg", None)
    if own is None:
        return default_url()
    return own if isinstance(own, (str, connection.OPTION_TYPES)) else None


def _preflight(service: Any, redis_url: Optional[str]) -> bool:
    """PING Redis once: exit with one line when no retry can help; False after SIGTERM / SIGINT."""
    from fastq.connection import preflight, redact
    from fastq.errors import RedisConfigurationError

    target = _redis_target(service, redis_url)
    if target is None:
        return True
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        problem = preflight(target, timeout=PREFLIGHT_TIMEOUT)
    except RedisConfigurationError as exc:
        raise Fail(str(exc), 1) from None
    except _Stop as exc:
        log.info("%s received before the scheduler started: stopping", signal.Signals(exc.args[0]).name)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if problem is not None:
        log.warning("Redis at %s is not reachable yet (%s); starting anyway, the scheduler retries until it is",
                    redact(target), problem)
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
