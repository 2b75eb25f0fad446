"""Prometheus metrics: the worker hooks (in-process, real Redis), Asynq's queue collector, and the
``/metrics`` endpoint of a real ``fastq-supervisor`` scraped over HTTP (multiprocess aggregation,
dead workers, restart of the metrics child, the parent staying single-threaded, bad flags)."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import defaultdict

import psutil
import pytest

prometheus_client = pytest.importorskip("prometheus_client",
                                        reason="the prometheus extra is not installed: pip install -e '.[prometheus]'")
from helpers import RedisServer, RunningWorker, async_wait_for, free_port, wait_for  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import fastq  # noqa: E402
from fastq import keys  # noqa: E402
from fastq.contrib.prometheus import AsynqQueueCollector, PrometheusHooks  # noqa: E402


def samples(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} of a text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(registry_or_text, name: str, **labels) -> float:
    if isinstance(registry_or_text, str):
        got = samples(registry_or_text).get((name, frozenset(labels.items())))
        return 0.0 if got is None else got
    got = registry_or_text.get_sample_value(name, labels)
    return 0.0 if got is None else got


def total(text: str, name: str, **match) -> float:
    return sum(v for (n, labels), v in samples(text).items()
               if n == name and all((k, val) in labels for k, val in match.items()))


# ------------------------------------------------------------------ hooks in one process


def test_hooks_count_outcomes_durations_and_in_flight(redis_url):
    registry = CollectorRegistry()
    hooks = PrometheusHooks(registry=registry)
    seen = {}

    async def handler(task):
        if task.type == "slow":
            seen["in_flight"] = registry.get_sample_value("fastq_tasks_in_progress",
                                                          {"queue": "default", "task_type": "slow"})
            await asyncio.sleep(0.2)
        elif task.type == "retry":
            raise RuntimeError("again")
        elif task.type == "skip":
            raise fastq.SkipRetry("no")

    async def main():
        c = fastq.Client(redis_url)
        c.enqueue_many([fastq.Task("ok")] * 5)
        c.enqueue(fastq.Task("slow"))
        c.enqueue(fastq.Task("retry"), max_retry=3)
        c.enqueue(fastq.Task("skip"))
        c.enqueue(fastq.Task("kept"), retention=60)
        async with RunningWorker(handler, redis_url, hooks=[hooks]):
            await async_wait_for(lambda: value(registry, "fastq_tasks_processed_total", queue="default",
                                               task_type="kept") == 1 and
                                 value(registry, "fastq_tasks_processed_total", queue="default",
                                       task_type="slow") == 1, what="all tasks ran")

    asyncio.run(main())
    assert seen["in_flight"] == 1.0
    q = {"queue": "default"}
    assert value(registry, "fastq_tasks_processed_total", **q, task_type="ok") == 5
    assert value(registry, "fastq_tasks_failed_total", **q, task_type="ok") == 0
    assert value(registry, "fastq_tasks_failed_total", **q, task_type="retry") == 1
    assert value(registry, "fastq_tasks_failed_total", **q, task_type="skip") == 1
    assert value(registry, "fastq_task_outcomes_total", **q, task_type="ok", outcome="done") == 5
    assert value(registry, "fastq_task_outcomes_total", **q, task_type="kept", outcome="complete") == 1
    assert value(registry, "fastq_task_outcomes_total", **q, task_type="retry", outcome="retry") == 1
    assert value(registry, "fastq_task_outcomes_total", **q, task_type="skip", outcome="archive") == 1
    assert value(registry, "fastq_task_duration_seconds_count", **q, task_type="ok") == 5
    assert value(registry, "fastq_task_duration_seconds_sum", **q, task_type="slow") >= 0.2
    assert value(registry, "fastq_task_duration_seconds_bucket", **q, task_type="slow", le="0.1") == 0
    assert value(registry, "fastq_task_duration_seconds_bucket", **q, task_type="slow", le="0.25") == 1
    for t in ("ok", "slow", "retry", "skip", "kept"):
        assert value(registry, "fastq_tasks_in_progress", **q, task_type=t) == 0


def test_requeue_at_shutdown_is_not_counted_as_processed(redis_url):
    registry = CollectorRegistry()
    started = []

    async def handler(task):
        started.append(1)
        await asyncio.sleep(30)

    async def main():
        fastq.Client(redis_url).enqueue(fastq.Task("long"))
        worker = RunningWorker(handler, redis_url, hooks=[PrometheusHooks(registry=registry)], shutdown_timeout=0.1)
        async with worker:
            await async_wait_for(lambda: started, what="task started")
        await worker.stop()

    asyncio.run(main())
    labels = {"queue": "default", "task_type": "long"}
    assert value(registry, "fastq_task_outcomes_total", **labels, outcome="requeue") == 1
    assert value(registry, "fastq_tasks_processed_total", **labels) == 0
    assert value(registry, "fastq_tasks_in_progress", **labels) == 0


def test_redis_errors_are_counted_when_redis_goes_away(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    registry = CollectorRegistry()

    async def main():
        async with RunningWorker(lambda task: None, server.url, hooks=[PrometheusHooks(registry=registry)]):
            await asyncio.to_thread(server.stop)
            await async_wait_for(lambda: value(registry, "fastq_redis_errors_total", operation="dequeue") >= 1,
                                 what="a failed dequeue counted")
            server.start()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_task_type_labels_are_capped():
    registry = CollectorRegistry()
    hooks = PrometheusHooks(registry=registry, max_task_types=2)
    for n in range(5):
        ctx = fastq.TaskContext(f"id{n}", 0, 3, "q", f"type{n}")
        hooks.task_started(ctx)
        hooks.task_finished(ctx, "done", None, 0.01)
    assert value(registry, "fastq_tasks_processed_total", queue="q", task_type="type0") == 1
    assert value(registry, "fastq_tasks_processed_total", queue="q", task_type="type1") == 1
    assert value(registry, "fastq_tasks_processed_total", queue="q", task_type="other") == 3
    assert value(registry, "fastq_tasks_in_progress", queue="q", task_type="other") == 0
    assert len(hooks._series_cache) == 3  # type0, type1, other: junk types do not grow it
    hooks.task_finished(fastq.TaskContext("x", 0, 3, "q", "type9"), "retry", None, 0.5)
    assert value(registry, "fastq_task_outcomes_total", queue="q", task_type="other", outcome="retry") == 1
    assert value(registry, "fastq_tasks_failed_total", queue="q", task_type="other") == 1
    with pytest.raises(ValueError, match="max_task_types"):
        PrometheusHooks(registry=registry, max_task_types=0)


def test_a_new_registry_never_gets_the_metrics_of_a_dead_one():
    seen = set()
    for _ in range(1000):  # a new registry soon reuses the id() of a collected one
        registry = CollectorRegistry()
        reused = id(registry) in seen
        seen.add(id(registry))
        hooks = PrometheusHooks(registry=registry)
        hooks.task_finished(fastq.TaskContext("x", 0, 0, "q", "t"), "done", None, 0.0)
        assert value(registry, "fastq_tasks_processed_total", queue="q", task_type="t") == 1
        del registry, hooks
        if reused:
            return
    pytest.skip("no id() was reused")


def test_hooks_share_metrics_per_registry():
    registry = CollectorRegistry()
    a, b = PrometheusHooks(registry=registry), PrometheusHooks(registry=registry)  # no duplicate error
    ctx = fastq.TaskContext("x", 0, 0, "q", "t")
    a.task_finished(ctx, "done", None, 0.0)
    b.task_finished(ctx, "done", None, 0.0)
    assert value(registry, "fastq_tasks_processed_total", queue="q", task_type="t") == 2


# ------------------------------------------------------------------ Asynq's queue collector


def test_asynq_queue_collector_matches_go_names_and_the_inspector(redis_url):
    c = fastq.Client(redis_url)
    c.enqueue_many([fastq.Task("a")] * 4, queue="critical")
    c.enqueue(fastq.Task("b"), queue="critical", process_in=600)
    c.enqueue(fastq.Task("c"), queue="low")
    ins = fastq.Inspector(redis_url)
    ins.pause_queue("low")
    r = ins.redis
    r.set(keys.processed_total_key("critical"), 17)
    r.set(keys.failed_total_key("critical"), 3)
    registry = CollectorRegistry()
    registry.register(AsynqQueueCollector(ins))
    text = prometheus_client.generate_latest(registry).decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    # the names, types and help texts of Go's x/metrics (the text format's counters end in _total)
    assert types == {"asynq_tasks_enqueued_total": "gauge", "asynq_queue_size": "gauge",
                     "asynq_queue_latency_seconds": "gauge", "asynq_queue_memory_usage_approx_bytes": "gauge",
                     "asynq_tasks_processed": "counter", "asynq_tasks_failed": "counter",
                     "asynq_queue_paused_total": "gauge", "fastq_inspector_up": "gauge"}
    assert "# HELP asynq_queue_size Number of tasks in a queue\n" in text
    assert "# TYPE asynq_tasks_processed_total counter\n" in text
    for q in ("critical", "low"):
        info = ins.get_queue_info(q)
        for state in ("active", "pending", "scheduled", "retry", "archived", "completed"):
            assert value(text, "asynq_tasks_enqueued_total", queue=q, state=state) == getattr(info, state)
        assert value(text, "asynq_queue_size", queue=q) == info.size
        assert value(text, "asynq_queue_memory_usage_approx_bytes", queue=q) == info.memory_usage > 0
        assert value(text, "asynq_queue_latency_seconds", queue=q) == pytest.approx(info.latency, abs=2)
    assert value(text, "asynq_tasks_enqueued_total", queue="critical", state="pending") == 4
    assert value(text, "asynq_tasks_enqueued_total", queue="critical", state="scheduled") == 1
    assert not [k for k in samples(text) if ("state", "aggregating") in k[1]]  # Go leaves it out
    assert value(text, "asynq_tasks_processed_total", queue="critical") == 17
    assert value(text, "asynq_tasks_failed_total", queue="critical") == 3
    assert value(text, "asynq_queue_paused_total", queue="low") == 1
    assert value(text, "asynq_queue_paused_total", queue="critical") == 0
    assert value(text, "fastq_inspector_up") == 1


def test_asynq_queue_collector_when_redis_is_down():
    registry = CollectorRegistry()
    registry.register(AsynqQueueCollector(fastq.Inspector(f"redis://127.0.0.1:{free_port()}/0")))
    text = prometheus_client.generate_latest(registry).decode()
    assert value(text, "fastq_inspector_up") == 0 and "asynq_queue_size" not in text


# ------------------------------------------------------------------ fastq-supervisor --metrics-port

APP = textwrap.dedent('''
    import asyncio, fastq
    mux = fastq.ServeMux()

    @mux.handle("ok")
    async def ok(task):
        await asyncio.sleep(float(task.payload or b"0"))

    @mux.handle("fail")
    def fail(task):
        raise RuntimeError("boom")
''')


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "metrics_app.py").write_text(APP)
    return tmp_path


def supervisor(app_dir, redis_url, *args, env=None):
    cmd = [sys.executable, "-m", "fastq.cli.supervisor", "metrics_app:mux", "--redis-url", redis_url, *args]
    return subprocess.Popen(cmd, cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def stop(proc, timeout=30) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"supervisor did not stop:\n{err}")
    assert proc.returncode == 0, err
    return err


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as res:
        return res.read().decode()


def try_scrape(port: int) -> str | None:
    try:
        return scrape(port)
    except (OSError, urllib.error.URLError):
        return None


def children(proc) -> dict[str, list[int]]:
    """The supervisor's children by role, from their process titles."""
    out: dict[str, list[int]] = defaultdict(list)
    for child in psutil.Process(proc.pid).children():
        try:
            title = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        role = "metrics" if "metrics [" in title else "worker" if "worker" in title else "other"
        out[role].append(child.pid)
    return out


@pytest.mark.slow
def test_supervisor_serves_aggregated_metrics_and_asynq_gauges(app_dir, redis_url, tmp_path):
    prom_dir = tmp_path / "prom"
    (prom_dir).mkdir()
    (prom_dir / "counter_999999.db").write_bytes(b"stale file of a previous run")
    port = free_port()
    c = fastq.Client(redis_url)
    c.enqueue_many([fastq.Task("ok", b"0.05")] * 40)
    c.enqueue_many([fastq.Task("fail")] * 6, max_retry=0)
    proc = supervisor(app_dir, redis_url, "--processes", "2", "--concurrency", "4", "--batch-size", "2",
                      "--metrics-port", str(port), env={"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)})
    try:
        wait_for(lambda: len(children(proc)["worker"]) == 2 and children(proc)["metrics"], what="children")
        assert psutil.Process(proc.pid).num_threads() == 1  # the parent never starts a thread
        text = wait_for(lambda: (t := try_scrape(port)) and total(t, "fastq_tasks_in_progress") > 0 and t,
                        timeout=20, what="tasks in progress")
        text = wait_for(lambda: (t := try_scrape(port)) and total(t, "fastq_tasks_processed_total") == 46 and t,
                        timeout=30, what="all 46 tasks counted")
        assert value(text, "fastq_tasks_processed_total", queue="default", task_type="ok") == 40
        assert value(text, "fastq_tasks_failed_total", queue="default", task_type="fail") == 6
        assert value(text, "fastq_task_outcomes_total", queue="default", task_type="fail", outcome="archive") == 6
        assert value(text, "fastq_task_duration_seconds_count", queue="default", task_type="ok") == 40
        assert value(text, "fastq_task_duration_seconds_bucket", queue="default", task_type="ok", le="0.025") == 0
        assert total(text, "fastq_tasks_in_progress") == 0
        # Asynq's gauges, as Go's exporter computes them
        assert value(text, "asynq_tasks_processed_total", queue="default") == 46
        assert value(text, "asynq_tasks_failed_total", queue="default") == 6
        assert value(text, "asynq_tasks_enqueued_total", queue="default", state="archived") == 6
        assert value(text, "asynq_queue_size", queue="default") == 6
        assert value(text, "asynq_queue_paused_total", queue="default") == 0
        # both workers wrote their own files and the endpoint summed them; the stale file was removed
        pids = {int(p.stem.rsplit("_", 1)[1]) for p in prom_dir.glob("counter_*.db")}
        assert set(children(proc)["worker"]) <= pids and 999999 not in pids
        per_worker = [value(prometheus_client.generate_latest(_registry_of(prom_dir, pid)).decode(),
                            "fastq_tasks_processed_total", queue="default", task_type="ok")
                      for pid in children(proc)["worker"]]
        assert sum(per_worker) == 40 and all(n > 0 for n in per_worker), per_worker
        # only /metrics is served; it listens on 127.0.0.1
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(port, "/other")
        assert err.value.code == 404
        metrics_pid = children(proc)["metrics"][0]
        listening = [c.laddr for c in psutil.Process(metrics_pid).net_connections("tcp") if c.status == "LISTEN"]
        assert listening == [("127.0.0.1", port)]
    finally:
        err = stop(proc)
    assert f"serving http://127.0.0.1:{port}/metrics" in err
    assert "Traceback" not in err


def _registry_of(directory, pid):
    """A registry reading one process's files only (to check that each worker counted its share)."""
    import shutil
    import tempfile

    from prometheus_client import multiprocess

    tmp = tempfile.mkdtemp(prefix="fastq-one-pid-")
    for path in directory.glob(f"*_{pid}.db"):
        shutil.copy(path, tmp)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=tmp)
    return registry


@pytest.mark.slow
def test_dead_workers_and_a_dead_metrics_child(app_dir, redis_url):
    port = free_port()
    fastq.Client(redis_url).enqueue_many([fastq.Task("ok", b"0")] * 10)
    proc = supervisor(app_dir, redis_url, "--processes", "1", "--metrics-port", str(port), "--shutdown-timeout", "1")
    try:
        text = wait_for(lambda: (t := try_scrape(port)) and total(t, "fastq_tasks_processed_total") == 10 and t,
                        timeout=20, what="10 tasks counted")
        worker = children(proc)["worker"][0]
        # a worker killed while running tasks: its in-progress gauge goes, its counts stay
        fastq.Client(redis_url).enqueue_many([fastq.Task("ok", b"30")] * 3)
        wait_for(lambda: total(try_scrape(port) or "", "fastq_tasks_in_progress") == 3, what="3 in progress")
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: (w := children(proc)["worker"]) and w[0] != worker, what="worker replaced")
        text = wait_for(lambda: (t := try_scrape(port)) and total(t, "fastq_tasks_in_progress") < 3 and t,
                        what="dead worker's gauge removed")
        assert value(text, "fastq_tasks_processed_total", queue="default", task_type="ok") >= 10
        # the metrics child dies: it is restarted and serves again on the same port
        old = children(proc)["metrics"][0]
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: (m := children(proc)["metrics"]) and m[0] != old, timeout=15, what="metrics restarted")
        text = wait_for(lambda: try_scrape(port), timeout=15, what="metrics served again")
        assert value(text, "fastq_tasks_processed_total", queue="default", task_type="ok") >= 10
        assert psutil.Process(proc.pid).num_threads() == 1
    finally:
        err = stop(proc)
    assert re.search(r"metrics server \d+ \(slot -2\) died( after [\d.]+s)? \(killed by SIGKILL\)", err), err
    prom_dir = re.search(r"worker files in (\S+)\)", err).group(1)
    assert os.path.basename(prom_dir).startswith("fastq-metrics-")
    assert not os.path.exists(prom_dir)  # the directory the supervisor made is removed at exit


@pytest.mark.parametrize("args, fragment", [
    (["--metrics-port", "70000"], "Invalid value for '--metrics-port': must be a port, 0-65535, got 70000"),
    (["--metrics-port", "http"], "Invalid value for '--metrics-port': expected a port number"),
    (["--metrics-port", "{busy}"], "cannot serve metrics on 127.0.0.1:{busy}"),
    (["--metrics-port", "0", "--metrics-host", "no-such-host.invalid"], "cannot serve metrics on no-such-host"),
    (["--log-format", "xml"], "Invalid value for '--log-format': 'xml' is not one of 'text', 'json'"),
])
def test_bad_metrics_and_log_flags_fail_clearly(app_dir, redis_url, args, fragment):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        args = [a.format(busy=port) for a in args]
        proc = supervisor(app_dir, redis_url, *args)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert fragment.format(busy=port) in err and "Traceback" not in err
    assert not fastq.Inspector(redis_url).servers()  # nothing was started


def test_import_fastq_loads_no_integration():
    """The extras stay optional: importing fastq (and its CLIs) pulls in none of them."""
    # redis-py itself imports opentelemetry when it is installed: count only what fastq adds
    code = ("import sys, redis, redis.asyncio; before = set(sys.modules); "
            "import fastq, fastq.cli, fastq.cli.supervisor, fastq.logging; "
            "bad = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('prometheus_client', "
            "'opentelemetry', 'starlette', 'uvicorn', 'jinja2', 'selenium')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_blocked_event_loop_is_counted_by_task_type(redis_url):
    registry = CollectorRegistry()

    async def handler(task):
        time.sleep(1.8)  # blocks the worker's event loop

    async def main():
        client = fastq.AsyncClient(redis_url)
        await client.enqueue(fastq.Task("block:me", b""))
        await client.close()
        async with RunningWorker(handler, redis_url, hooks=[PrometheusHooks(registry=registry)]):
            await async_wait_for(lambda: value(registry, "fastq_event_loop_blocked_total", task_type="block:me"),
                                 what="the blocked episode counted")

    asyncio.run(main())
    assert value(registry, "fastq_event_loop_blocked_total", task_type="block:me") == 1
    assert 1.7 <= value(registry, "fastq_event_loop_blocked_seconds_total", task_type="block:me") <= 2.5
    hooks = PrometheusHooks(registry=registry)
    hooks.loop_blocked(None, 1.5)  # blocked outside any task
    assert value(registry, "fastq_event_loop_blocked_total", task_type="") == 1
