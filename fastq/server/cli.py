"""``fastq-supervisor APP``: run worker processes for a ServeMux or handler."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import signal
import sys
import threading
from typing import Optional, Sequence

from fastq import config_file
from fastq._redis import default_url
from fastq._version import version_line
from fastq.errors import AppImportError, InvalidOptionError
from fastq.server.config import WorkerConfig, parse_queues

log = logging.getLogger("fastq.supervisor")

PREFLIGHT_TIMEOUT = 3.0  # seconds for the start-up PING (connect, TLS handshake, reply)


class _StopBeforeStart(BaseException):
    """SIGTERM / SIGINT before the supervisor took over its signals (importing APP, the start-up check)."""


def _stop_before_start(signum: int, _frame: object) -> None:
    raise _StopBeforeStart(signum)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def _queues(text: str) -> dict:
    try:
        return parse_queues(text)
    except InvalidOptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastq-supervisor",
        description="Run fastq worker processes that serve APP (a ServeMux or handler callable).",
    )
    p.add_argument("app", metavar="APP", nargs="?", default=None,
                   help="module:attribute naming a fastq.ServeMux or a handler callable")
    p.add_argument("--version", action="version", version=version_line("fastq-supervisor"),
                   help="show the fastq version and exit")
    p.add_argument("--redis-url", default=None, help=f"Redis URL (default: $FASTQ_REDIS_URL or {default_url()}): "
                   "redis://, rediss://, unix://, redis+sentinel://h1:p1,h2:p2/db?master=NAME, redis+cluster://h1:p1,...")
    p.add_argument("--tls-ca", default=None, metavar="PEM", help="CA that signed the Redis server's certificate "
                   "(rediss:// URLs; verification is always on)")
    p.add_argument("--tls-cert", default=None, metavar="PEM", help="client certificate for mutual TLS")
    p.add_argument("--tls-key", default=None, metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--tls-server-name", default=None, metavar="NAME",
                   help="name the server's certificate must carry, when it is not the URL's host")
    p.add_argument("--processes", type=_int_at_least(1), default=os.cpu_count() or 1,
                   help="worker processes to fork (default: CPU count)")
    p.add_argument("--concurrency", type=_int_at_least(1), default=100,
                   help="tasks run at once per process (default: 100)")
    p.add_argument("--queues", type=_queues, default={"default": 1},
                   help="queues to serve, comma-separated, with optional weights: critical=6,default=3,low=1")
    p.add_argument("--strict-priority", action="store_true",
                   help="always serve higher-weight queues first instead of weighted random order")
    p.add_argument("--shutdown-timeout", type=_seconds, default=8.0,
                   help="seconds running tasks get to finish on SIGTERM before they are requeued (default: 8)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=200,
                   help="most tasks claimed per dequeue round trip (default: 200)")
    p.add_argument("--poll-interval", type=_seconds, default=1.0,
                   help="longest sleep between polls of empty queues, in seconds; tasks from fastq clients "
                        "wake idle workers at once, this bounds pickup of tasks from other (e.g. Go) "
                        "clients (default: 1)")
    p.add_argument("--scheduler", metavar="MODULE:ATTRIBUTE", default=None,
                   help="also run periodic tasks: a fastq.Scheduler or PeriodicTaskManager, in one extra process")
    p.add_argument("--lease-duration", type=_int_at_least(3), default=8, metavar="SECONDS",
                   help="lease of a claimed task; a dead worker's tasks are recovered within about this "
                        "(default: 8; Asynq: 30)")
    p.add_argument("--on-start", metavar="MODULE:FUNCTION", default=None,
                   help="a function called in each worker process after it forks, before it takes tasks "
                        "(open database pools here); if it raises, the worker exits and is restarted with back-off")
    p.add_argument("--hard-timeout-grace", type=_seconds, default=30.0, metavar="SECONDS",
                   help="recycle a worker whose sync handler is still running this long after its task "
                        "timed out or was cancelled (default: 30)")
    p.add_argument("--max-tasks-per-child", type=_int_at_least(0), default=0,
                   help="replace a worker process after it ran this many tasks (default: 0 = never)")
    p.add_argument("--max-memory-per-child", type=_seconds, default=0.0, metavar="MB",
                   help="replace a worker process whose RSS passes this many MB, after its running "
                        "tasks finish (default: 0 = never)")
    p.add_argument("--group-aggregator", metavar="MODULE:FUNCTION", default=None,
                   help="aggregate tasks enqueued with group=...: a function (group, tasks) -> Task "
                        "(or (Task, options)); see README 'Groups and aggregation'")
    p.add_argument("--group-grace-period", type=_seconds, default=60.0, metavar="SECONDS",
                   help="aggregate a group once nothing joined it for this long (default: 60, at least 1)")
    p.add_argument("--group-max-delay", type=_seconds, default=0.0, metavar="SECONDS",
                   help="aggregate a group once its oldest task waited this long (default: 0 = no limit)")
    p.add_argument("--group-max-size", type=_int_at_least(0), default=0, metavar="N",
                   help="aggregate a group as soon as it holds N tasks, N at a time (default: 0 = no limit)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level (default: INFO)")
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="text lines with task=<id>, or one JSON object per line with task_id, task_type, "
                        "queue, retry (default: text)")
    p.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics from one extra process: task "
                        "counters and durations of all workers, and Asynq's queue gauges "
                        "(needs fastq-tasks[prometheus]; 0 = any free port, logged)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address the metrics endpoint binds (default: 127.0.0.1)")
    config_file.add_arguments(p, "supervisor")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = config_file.parse_args(parser, argv, "supervisor", required=["app"])  # flag > env > file > default
    from fastq import logging as fastq_logging

    fastq_logging.setup(args.log_level, log_format=args.log_format)
    # Until Supervisor.run() blocks them, SIGTERM / SIGINT end the start quietly (no traceback).
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop_before_start) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _main(parser, args)
    except _StopBeforeStart as exc:
        log.info("%s received before the workers started: stopping", signal.Signals(exc.args[0]).name)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    metrics = None
    if args.metrics_port is not None:  # before the app is imported: it may import prometheus_client
        try:
            from fastq.contrib.prometheus import MetricsServer

            metrics = MetricsServer(args.metrics_host, args.metrics_port)
        except ImportError as exc:
            parser.exit(2, f"fastq-supervisor: error: --metrics-port: {exc}\n")
        except OSError as exc:
            parser.exit(2, f"fastq-supervisor: error: cannot serve metrics on {args.metrics_host}:"
                           f"{args.metrics_port}: {exc.strerror or exc}\n")
        if not _is_loopback(metrics.host):
            log.warning("the metrics endpoint %s has no authentication and listens on %s, not only on loopback: "
                        "anyone who reaches the port reads queue names and task counts; keep --metrics-host "
                        "127.0.0.1 (the default) or restrict the port (firewall, authenticating proxy)",
                        metrics.url, metrics.host)
    try:
        return _run(parser, args, metrics)
    finally:
        if metrics is not None:
            metrics.close()


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, metrics: object) -> int:
    from fastq.server.supervisor import Supervisor, import_app

    try:
        handler = import_app(args.app)
        on_start = import_app(args.on_start) if args.on_start else None
        group_aggregator = import_app(args.group_aggregator) if args.group_aggregator else None
        scheduler = None
        if args.scheduler:
            from fastq.scheduler.app import as_service

            scheduler = as_service(args.scheduler)
    except AppImportError as exc:
        parser.exit(2, f"fastq-supervisor: error: {exc}\n")
    from fastq.connection import ConnectionConfigError, with_tls

    try:  # checks the URL and reads the TLS files now; connects only when used
        redis_url = with_tls(args.redis_url or default_url(), args.tls_ca, args.tls_cert, args.tls_key,
                             args.tls_server_name)
    except ConnectionConfigError as exc:
        parser.exit(2, f"fastq-supervisor: error: {exc}\n")
    _preflight(parser, redis_url)
    try:
        config = WorkerConfig(
            redis_url=redis_url,
            concurrency=args.concurrency,
            queues=args.queues,
            strict_priority=args.strict_priority,
            shutdown_timeout=args.shutdown_timeout,
            batch_size=args.batch_size,
            poll_interval=max(args.poll_interval, 0.001),
            max_tasks=args.max_tasks_per_child,
            lease_duration=args.lease_duration,
            hard_timeout_grace=args.hard_timeout_grace,
            on_start=on_start,
            group_aggregator=group_aggregator,
            group_grace_period=args.group_grace_period,
            group_max_delay=args.group_max_delay,
            group_max_size=args.group_max_size,
        )
    except InvalidOptionError as exc:
        parser.exit(2, f"fastq-supervisor: error: {exc}\n")
    logging.getLogger("fastq.supervisor").debug("config: %s", config)
    return Supervisor(handler, config, args.processes, args.app, max_memory_mb=args.max_memory_per_child,
                      scheduler=scheduler, metrics=metrics).run()


def _preflight(parser: argparse.ArgumentParser, redis_url: str) -> None:
    """PING Redis once before forking: exit with one line when no retry can help (wrong password or
    user, missing ACL permission, unknown host, TLS failure or a plain-text port given as rediss://);
    when Redis is only unreachable for now, say so and start the workers, which retry."""
    from fastq.connection import preflight, redact
    from fastq.errors import RedisConfigurationError

    try:
        problem = preflight(redis_url, timeout=PREFLIGHT_TIMEOUT)
    except RedisConfigurationError as exc:
        parser.exit(1, f"fastq-supervisor: error: {exc}\n")
    if problem is not None:
        log.warning("Redis at %s is not reachable yet (%s); starting the workers anyway, they retry until it is",
                    redact(redis_url), problem)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
