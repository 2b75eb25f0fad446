"""Periodic tasks: the ``Scheduler`` (cron entries, Go Asynq's layout in Redis), the
``PeriodicTaskManager`` (entries that follow a config provider) and ``run_scheduler`` (a process of
its own, as ``fastq-scheduler`` runs it).

Modules, each importing only the ones before it (no import cycle):

* ``cron``: cron specs and time zones (``parse_cron``, ``load_zone``);
* ``_service``: the ``run()`` / ``start()`` / ``stop()`` life cycle both services share;
* ``scheduler``: ``Scheduler`` and what it writes to Redis;
* ``periodic``: ``PeriodicTaskConfig``, ``PeriodicTaskManager``;
* ``app``: ``load_app``, ``as_service``, ``run_scheduler``.

The ``fastq-scheduler`` command itself is ``fastq.cli.scheduler``.
"""
from fastq.scheduler.app import run_scheduler
from fastq.scheduler.periodic import PeriodicTaskConfig, PeriodicTaskManager
from fastq.scheduler.scheduler import GO_ZERO_TIME, MAX_HISTORY, TICK_GUARD_TTL, Scheduler

__all__ = ["Scheduler", "run_scheduler", "GO_ZERO_TIME", "MAX_HISTORY", "TICK_GUARD_TTL", "PeriodicTaskConfig",
           "PeriodicTaskManager"]
