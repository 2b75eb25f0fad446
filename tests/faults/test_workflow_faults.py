"""Workflow faults (fault-matrix rows C1-C2): a worker SIGKILLed in the middle of a chain and of
a chord of 1,000 members across 2 processes. The step that follows is created by the script
that acknowledges the one before, so the kill can only cost a re-run of the steps that were in
flight: nothing is lost, the next step is created once, the chord's callback runs once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import FAST, HERE, wait

import fastq
from fastq import keys

sys.path.insert(0, str(HERE))


def start(h, victim: str, processes: int = 2) -> subprocess.Popen:
    env = dict(os.environ, FASTQ_LEDGER=h.ledger_path, FASTQ_VICTIM=victim,
               PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(h.tmp / f"flow-supervisor-{len(h.procs)}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", "flow_app:app", "--redis-url", h.url,
                             "--processes", str(processes), *FAST], cwd=HERE, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    proc.log_path = log.name  # type: ignore[attr-defined]
    h.procs.append(proc)
    return proc


def killed(h) -> bool:
    return Path(h.ledger_path + ".killed").exists()


def test_c1_sigkill_in_the_middle_of_a_chain(h):
    """C1: the third of five chained steps SIGKILLs its worker on its first run."""
    import flow_app

    app = fastq.App(h.url)
    step = app.task(name=flow_app.step.name)(flow_app.step.fn)
    ref = fastq.chain(*[step.s(0, "s0")] + [step.s(f"s{i}") for i in range(1, 5)]).enqueue()
    sup = start(h, victim="s2")
    try:
        assert ref.result(60) == 5
        assert killed(h)
        ids = [s.id for s in ref.steps]
        starts, ends = h.ledger.counts("start"), h.ledger.counts("end")
        assert [starts[i] for i in ids] == [1, 1, 2, 1, 1]  # only the killed step ran again
        assert [ends[i] for i in ids] == [1, 1, 1, 1, 1]  # every step succeeded exactly once
        for s in ref.steps:
            assert h.r.hget(keys.task_key("default", s.id), "state") == b"completed"
        assert not h.r.keys("*fastq_step*")
        assert h.stop(sup) == 0
    finally:
        app.close()


def test_c2_sigkill_in_the_middle_of_a_chord_of_1000_members(h):
    """C2: a chord of 1,000 members on 2 worker processes; member 500 SIGKILLs its worker."""
    import flow_app

    app = fastq.App(h.url)
    member = app.task(name=flow_app.member.name)(flow_app.member.fn)
    collect = app.task(name=flow_app.collect.name)(flow_app.collect.fn)
    ref = fastq.chord(fastq.group(member.s(i) for i in range(1000)), collect.s()).enqueue()
    sup = start(h, victim="member-500")
    try:
        assert ref.result(120) == [1000, sum(range(1000)), 1]  # every result, in order
        assert killed(h)
        starts, ends = h.ledger.counts("start"), h.ledger.counts("end")
        assert starts[ref.id] == 1 and ends[ref.id] == 1  # the callback ran once
        members = [m.id for m in ref.members.members]
        assert all(ends[m] >= 1 for m in members)  # none lost
        rerun = [m for m in members if starts[m] > 1]
        assert members[500] in rerun and len(rerun) <= 20  # at most the killed worker's in-flight tasks
        pids = {row[0] for row in h.ledger.db.execute("SELECT DISTINCT pid FROM runs WHERE event='end'")}
        assert len(pids) >= 2  # the members ran on both processes
        info = fastq.Inspector(h.url).get_chord("default", ref.id)
        assert (info.total, info.done, info.state) == (1000, 1000, "done")
        assert h.stop(sup) == 0
    finally:
        app.close()


def test_c3_a_chord_member_that_kills_every_worker_fails_the_chord(h):
    """C3: a member SIGKILLs its worker on every run (max_retry=1): the supervisor's recovery
    archives it ("worker lost"), which fails the chord and runs its error callback once."""
    import flow_app

    app = fastq.App(h.url)
    member = app.task(name=flow_app.member.name)(flow_app.member.fn)
    crasher = app.task(name=flow_app.crasher.name, max_retry=1)(flow_app.crasher.fn)
    collect = app.task(name=flow_app.collect.name)(flow_app.collect.fn)
    alert = app.task(name=flow_app.alert.name)(flow_app.alert.fn)
    ref = fastq.chord(fastq.group([member.s(1), crasher.s(2), member.s(3)]), collect.s()).on_error(alert.s()).enqueue()
    bad = ref.members.members[1].id
    sup = start(h, victim="none")
    try:
        with pytest.raises(fastq.TaskFailedError, match=f"chord member {bad} failed: worker .* lost"):
            ref.result(60)
        assert h.ledger.counts("start")[bad] == 2  # its run and its one retry
        wait(lambda: h.ledger.counts("alert")[bad] == 1, 30, "the error callback")
        info = fastq.Inspector(h.url).get_chord("default", ref.id)
        assert (info.state, info.failed_member) == ("failed", bad)
        assert h.stop(sup) == 0
    finally:
        app.close()
