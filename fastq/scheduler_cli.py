"""``fastq-scheduler APP``: run a Scheduler, a PeriodicTaskManager or a config provider in its own process.

APP is ``module:attribute`` (the attribute may be dotted; the current
directory is on ``sys.path``). Every flag (and APP) can also come from
``FASTQ_SCHEDULER_<FLAG>`` or the ``[scheduler]`` table of a ``--config`` TOML file
(``fastq.config_file``). A bad APP, flag or setting exits with code 2 and one
line on stderr; a provider whose first ``get_configs()`` fails exits with code 1, and so
does a Redis that refuses the scheduler for good at start (wrong password or user, unknown
host, TLS failure: ``fastq.connection.preflight``). A Redis that is only unreachable for now
is retried.
"""
from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from typing import Any, Optional, Sequence

from fastq import config_file
from fastq._redis import default_url
from fastq._version import version_line
from fastq.errors import AppImportError, ConfigProviderError, InvalidOptionError, TimeZoneError
from fastq.scheduler.app import as_service, load_app

__all__ = ["load_app", "as_service", "main", "ENV_PREFIX"]

ENV_PREFIX = "FASTQ_SCHEDULER_"  # FASTQ_APP etc. belong to fastq-supervisor
PREFLIGHT_TIMEOUT = 3.0  # seconds for the start-up PING (connect, TLS handshake, reply)

log = logging.getLogger("fastq.scheduler")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _zone(text: str) -> str:
    from fastq.scheduler.cron import load_zone

    try:
        load_zone(text)
    except TimeZoneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastq-scheduler",
        description="Enqueue periodic tasks: run APP, a fastq.Scheduler, a fastq.PeriodicTaskManager "
                    "or a config provider, until SIGTERM/SIGINT.",
    )
    p.add_argument("app", metavar="APP", nargs="?", default=None,
                   help="module:attribute naming a Scheduler, PeriodicTaskManager or provider")
    p.add_argument("--version", action="version", version=version_line("fastq-scheduler"),
                   help="show the fastq version and exit")
    p.add_argument("--redis-url", default=None,
                   help=f"Redis URL (default: the APP's own, else $FASTQ_REDIS_URL or {default_url()})")
    p.add_argument("--location", type=_zone, default=None,
                   help="IANA time zone of cron specs without CRON_TZ= (default: the APP's own, else UTC)")
    p.add_argument("--heartbeat-interval", type=_positive_seconds, default=None,
                   help="seconds between writes of the entries to Redis (default: the APP's own, else 10)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level (default: INFO)")
    config_file.add_arguments(p, "scheduler", ENV_PREFIX, example="LOCATION")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = config_file.parse_args(parser, argv, "scheduler", required=["app"], env_prefix=ENV_PREFIX)
    from fastq import logging as fastq_logging
    from fastq._redis import sync_client
    from fastq.scheduler import run_scheduler

    fastq_logging.setup(args.log_level)
    if args.redis_url is not None:
        try:
            sync_client(args.redis_url).close()  # validates the URL; connects only when used
        except ValueError as exc:
            parser.exit(2, f"fastq-scheduler: error: {exc}\n")
    try:
        service = as_service(args.app)
    except AppImportError as exc:
        parser.exit(2, f"fastq-scheduler: error: {exc}\n")
    if not _preflight(parser, service, args.redis_url):
        return 0  # SIGTERM / SIGINT during the check
    try:
        return run_scheduler(service, args.redis_url, location=args.location,
                             heartbeat_interval=args.heartbeat_interval)
    except (InvalidOptionError, TimeZoneError) as exc:
        parser.exit(2, f"fastq-scheduler: error: {exc}\n")
    except ConfigProviderError as exc:
        parser.exit(1, f"fastq-scheduler: error: {exc}\n")
    return 0  # pragma: no cover


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


def _preflight(parser: argparse.ArgumentParser, service: Any, redis_url: Optional[str]) -> bool:
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
        parser.exit(1, f"fastq-scheduler: error: {exc}\n")
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
