"""``fastq-supervisor APP``: run worker processes for a ServeMux or handler.

Every flag (and APP) can also come from ``FASTQ_<FLAG>`` or the ``[supervisor]`` table of a
``--config`` TOML file (``fastq.config_file``). A bad APP, flag or setting exits with code 2
and one line on stderr; so does a Redis URL or TLS file that cannot be used. A Redis that
refuses the workers for good at start (wrong password or user, unknown host, TLS failure)
exits with code 1; one that is only unreachable for now is retried. The processes themselves
are ``fastq.server.supervisor.Supervisor``'s.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from typing import Any, Optional, Sequence

import click

from fastq import config_file
from fastq.cli._script import CONTEXT, Fail, run, version_option
from fastq.cli._types import IntAtLeast, NumberAtLeast, Port, Queues
from fastq.errors import AppImportError, InvalidOptionError
from fastq.redis.facade import default_url

__all__ = ["command", "main"]

PROG = "fastq-supervisor"
log = logging.getLogger("fastq.supervisor")

PREFLIGHT_TIMEOUT = 3.0  # seconds for the start-up PING (connect, TLS handshake, reply)
LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


class _StopBeforeStart(BaseException):
    """SIGTERM / SIGINT before the supervisor took over its signals (importing APP, the start-up check)."""


def _stop_before_start(signum: int, _frame: object) -> None:
    raise _StopBeforeStart(signum)


@click.command(PROG, context_settings=CONTEXT, params=[version_option(PROG)],
               help="Run fastq worker processes that serve APP (a ServeMux or handler callable).")
@click.argument("app", metavar="APP", required=False, default=None)
@click.option("--redis-url", default=None, metavar="URL",
              help=f"Redis URL (default: $FASTQ_REDIS_URL or {default_url()}): redis://, rediss://, unix://, "
                   "redis+sentinel://h1:p1,h2:p2/db?master=NAME, redis+cluster://h1:p1,...")
@click.option("--tls-ca", default=None, metavar="PEM", help="CA that signed the Redis server's certificate "
              "(rediss:// URLs; verification is always on)")
@click.option("--tls-cert", default=None, metavar="PEM", help="client certificate for mutual TLS")
@click.option("--tls-key", default=None, metavar="PEM", help="private key of --tls-cert")
@click.option("--tls-server-name", default=None, metavar="NAME",
              help="name the server's certificate must carry, when it is not the URL's host")
@click.option("--processes", type=IntAtLeast(1), default=os.cpu_count() or 1, metavar="N",
              help="worker processes to fork (default: CPU count)")
@click.option("--concurrency", type=IntAtLeast(1), default=100, metavar="N",
              help="tasks run at once per process (default: 100)")
@click.option("--queues", type=Queues(), default={"default": 1}, metavar="QUEUES",
              help="queues to serve, comma-separated, with optional weights: critical=6,default=3,low=1")
@click.option("--strict-priority", is_flag=True,
              help="always serve higher-weight queues first instead of weighted random order")
@click.option("--shutdown-timeout", type=NumberAtLeast(0), default=8.0, metavar="SECONDS",
              help="seconds running tasks get to finish on SIGTERM before they are requeued (default: 8)")
@click.option("--batch-size", type=IntAtLeast(1), default=200, metavar="N",
              help="most tasks claimed per dequeue round trip (default: 200)")
@click.option("--poll-interval", type=NumberAtLeast(0), default=1.0, metavar="SECONDS",
              help="longest sleep between polls of empty queues, in seconds; tasks from fastq clients "
                   "wake idle workers at once, this bounds pickup of tasks from other (e.g. Go) "
                   "clients unless --keyspace-wakeup (default: 1)")
@click.option("--keyspace-wakeup", is_flag=True, default=False,
              help="also wake idle workers through Redis keyspace notifications, so tasks pushed by "
                   "any client (Go's) start within milliseconds; adds K and l to notify-keyspace-events "
                   "where CONFIG is allowed, else warns and polls (default: off; not on Redis Cluster)")
@click.option("--scheduler", metavar="MODULE:ATTRIBUTE", default=None,
              help="also run periodic tasks: a fastq.Scheduler or PeriodicTaskManager, in one extra process")
@click.option("--lease-duration", type=IntAtLeast(3), default=8, metavar="SECONDS",
              help="lease of a claimed task; a dead worker's tasks are recovered within about this "
                   "(default: 8; Asynq: 30)")
@click.option("--on-start", metavar="MODULE:FUNCTION", default=None,
              help="a function called in each worker process after it forks, before it takes tasks "
                   "(open database pools here); if it raises, the worker exits and is restarted with back-off")
@click.option("--hard-timeout-grace", type=NumberAtLeast(0), default=30.0, metavar="SECONDS",
              help="recycle a worker whose sync handler is still running this long after its task "
                   "timed out or was cancelled (default: 30)")
@click.option("--pool", type=click.Choice(["threads", "inline"]), default="threads",
              help="where plain def handlers run: threads (up to --concurrency threads, fed in batches) or "
                   "inline on each worker's event loop (fastest for handlers that take microseconds; one "
                   "that blocks stops that worker's loop) (default: threads)")
@click.option("--log-tasks", is_flag=True, default=False,
              help="log one INFO line per finished task with its outcome and duration (default: off; "
                   "costs throughput at high task rates)")
@click.option("--max-tasks-per-child", type=IntAtLeast(0), default=0, metavar="N",
              help="replace a worker process after it ran this many tasks (default: 0 = never)")
@click.option("--max-memory-per-child", type=NumberAtLeast(0, unit="MB"), default=0.0, metavar="MB",
              help="replace a worker process whose RSS passes this many MB, after its running "
                   "tasks finish (default: 0 = never)")
@click.option("--group-aggregator", metavar="MODULE:FUNCTION", default=None,
              help="aggregate tasks enqueued with group=...: a function (group, tasks) -> Task "
                   "(or (Task, options)); see README 'Groups and aggregation'")
@click.option("--group-grace-period", type=NumberAtLeast(0), default=60.0, metavar="SECONDS",
              help="aggregate a group once nothing joined it for this long (default: 60, at least 1)")
@click.option("--group-max-delay", type=NumberAtLeast(0), default=0.0, metavar="SECONDS",
              help="aggregate a group once its oldest task waited this long (default: 0 = no limit)")
@click.option("--group-max-size", type=IntAtLeast(0), default=0, metavar="N",
              help="aggregate a group as soon as it holds N tasks, N at a time (default: 0 = no limit)")
@click.option("--log-level", type=LEVELS, default="INFO", help="log level (default: INFO)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              help="text lines with task=<id>, or one JSON object per line with task_id, task_type, "
                   "queue, retry (default: text)")
@click.option("--metrics-port", type=Port(), default=None, metavar="PORT",
              help="serve Prometheus metrics at http://HOST:PORT/metrics from one extra process: task "
                   "counters and durations of all workers, and Asynq's queue gauges "
                   "(needs fastq-tasks[prometheus]; 0 = any free port, logged)")
@click.option("--metrics-host", default="127.0.0.1", metavar="HOST",
              help="address the metrics endpoint binds (default: 127.0.0.1)")
@click.pass_context
def command(ctx: click.Context, /, **_params: Any) -> int:
    try:  # flag > env > file > default
        args = config_file.resolve(ctx, "supervisor", required=["app"])
    except config_file.ConfigError as exc:
        raise Fail(str(exc), 2) from None
    from fastq import logging as fastq_logging

    fastq_logging.setup(args["log_level"], log_format=args["log_format"])
    # Until Supervisor.run() blocks them, SIGTERM / SIGINT end the start quietly (no traceback).
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop_before_start) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _main(args)
    except _StopBeforeStart as exc:
        log.info("%s received before the workers started: stopping", signal.Signals(exc.args[0]).name)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


for _param in config_file.config_options("supervisor"):
    command.params.append(_param)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``fastq-supervisor`` console script."""
    return run(command, argv, PROG)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _main(args: dict[str, Any]) -> int:
    metrics = None
    if args["metrics_port"] is not None:  # before the app is imported: it may import prometheus_client
        try:
            from fastq.contrib.prometheus import MetricsServer

            metrics = MetricsServer(args["metrics_host"], args["metrics_port"])
        except ImportError as exc:
            raise Fail(f"--metrics-port: {exc}", 2) from None
        except OSError as exc:
            raise Fail(f"cannot serve metrics on {args['metrics_host']}:{args['metrics_port']}: "
                       f"{exc.strerror or exc}", 2) from None
        if not _is_loopback(metrics.host):
            log.warning("the metrics endpoint %s has no authentication and listens on %s, not only on loopback: "
                        "anyone who reaches the port reads queue names and task counts; keep --metrics-host "
                        "127.0.0.1 (the default) or restrict the port (firewall, authenticating proxy)",
                        metrics.url, metrics.host)
    try:
        return _run(args, metrics)
    finally:
        if metrics is not None:
            metrics.close()


def _run(args: dict[str, Any], metrics: object) -> int:
    from fastq.server.config import WorkerConfig
    from fastq.server.supervisor import Supervisor, import_app

    try:
        handler = import_app(args["app"])
        on_start = import_app(args["on_start"]) if args["on_start"] else None
        group_aggregator = import_app(args["group_aggregator"]) if args["group_aggregator"] else None
        scheduler = None
        if args["scheduler"]:
            from fastq.scheduler.app import as_service

            scheduler = as_service(args["scheduler"])
    except AppImportError as exc:
        raise Fail(str(exc), 2) from None
    from fastq.connection import ConnectionConfigError, with_tls

    try:  # checks the URL and reads the TLS files now; connects only when used
        url = args["redis_url"]
        if not url and hasattr(handler, "worker_config"):  # a fastq.App: its own URL, unless one is given
            url = getattr(handler, "redis_url", None)
        redis_url = with_tls(url or default_url(), args["tls_ca"], args["tls_cert"], args["tls_key"],
                             args["tls_server_name"])
    except ConnectionConfigError as exc:
        raise Fail(str(exc), 2) from None
    _preflight(redis_url)
    # WorkerConfig field -> the setting that gives it (the same name, but for max_tasks)
    fields = {name: name for name in ("concurrency", "queues", "strict_priority", "shutdown_timeout", "batch_size",
                                      "poll_interval", "lease_duration", "hard_timeout_grace", "on_start",
                                      "group_aggregator", "group_grace_period", "group_max_delay", "group_max_size",
                                      "log_tasks", "keyspace_wakeup", "pool")}
    fields["max_tasks"] = "max_tasks_per_child"
    values = {field: args[setting] for field, setting in fields.items()}
    values.update(poll_interval=max(args["poll_interval"], 0.001), on_start=on_start, group_aggregator=group_aggregator)
    worker_config = getattr(handler, "worker_config", None)  # a fastq.App: its settings, under the given flags
    try:
        if callable(worker_config):
            given = getattr(args, "given", frozenset(fields.values()))
            config = worker_config(redis_url=redis_url, **{f: v for f, v in values.items() if fields[f] in given})
            handler = handler.mux
            names = handler.patterns
            log.info("serving App %s: %d task(s) on queues %s: %s", args["app"], len(names),
                     ", ".join(config.queues), ", ".join(names) or "(none)")
        else:
            config = WorkerConfig(redis_url=redis_url, **values)
    except InvalidOptionError as exc:
        raise Fail(str(exc), 2) from None
    log.debug("config: %s", config)
    code: int = Supervisor(handler, config, args["processes"], args["app"], max_memory_mb=args["max_memory_per_child"],
                           scheduler=scheduler, metrics=metrics).run()
    return code


def _preflight(redis_url: str) -> None:
    """PING Redis once before forking: exit with one line when no retry can help (wrong password or
    user, missing ACL permission, unknown host, TLS failure or a plain-text port given as rediss://);
    when Redis is only unreachable for now, say so and start the workers, which retry."""
    from fastq.connection import preflight, redact
    from fastq.errors import RedisConfigurationError

    try:
        problem = preflight(redis_url, timeout=PREFLIGHT_TIMEOUT)
    except RedisConfigurationError as exc:
        raise Fail(str(exc), 1) from None
    if problem is not None:
        log.warning("Redis at %s is not reachable yet (%s); starting the workers anyway, they retry until it is",
                    redact(redis_url), problem)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
