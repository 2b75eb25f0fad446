"""The fault tests' ledger: what was acknowledged at enqueue and what ran, in SQLite (WAL).

Independent of the Redis under test, so it survives every Redis fault.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter


class Ledger:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        # sync handlers run in a thread pool: one connection shared by the process's threads, serialised
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE IF NOT EXISTS enqueued (task_id TEXT PRIMARY KEY, at REAL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS runs (task_id TEXT, event TEXT, pid INTEGER, at REAL)")
        # runs a task makes by design (a planned failure with max_retry=n runs n + 1 times); tasks absent here
        # run once
        self.db.execute("CREATE TABLE IF NOT EXISTS planned (task_id TEXT PRIMARY KEY, runs INTEGER)")

    def enqueued(self, ids) -> None:
        now = time.time()
        self.db.executemany("INSERT OR IGNORE INTO enqueued VALUES (?, ?)", [(i, now) for i in ids])

    def plan(self, ids, runs: int) -> None:
        """Record that each of ``ids`` runs up to ``runs`` times by design (e.g. a handler that always fails,
        with max_retry = runs - 1): starts up to that many are not duplicates."""
        self.db.executemany("INSERT OR REPLACE INTO planned VALUES (?, ?)", [(i, runs) for i in ids])

    def planned_runs(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT task_id, runs FROM planned"))

    def record(self, task_id: str, event: str) -> None:
        with self._lock:
            self.db.execute("INSERT INTO runs VALUES (?, ?, ?, ?)", (task_id, event, os.getpid(), time.time()))

    def enqueued_ids(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT task_id FROM enqueued")}

    def ids(self, event: str) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT DISTINCT task_id FROM runs WHERE event = ?", (event,))}

    def counts(self, event: str) -> Counter:
        return Counter(row[0] for row in self.db.execute("SELECT task_id FROM runs WHERE event = ?", (event,)))

    def events(self, task_id: str) -> list[tuple]:
        return list(self.db.execute("SELECT event, pid, at FROM runs WHERE task_id = ? ORDER BY at", (task_id,)))

    def starts_after(self, ids, t0: float) -> dict[str, float]:
        """First start at or after ``t0`` of each of ``ids`` that has one."""
        out: dict[str, float] = {}
        for tid, at in self.db.execute("SELECT task_id, MIN(at) FROM runs WHERE event = 'start' AND at >= ? "
                                       "GROUP BY task_id", (t0,)):
            if tid in ids:
                out[tid] = at
        return out

    def first(self, event: str, ids) -> dict[str, float]:
        out: dict[str, float] = {}
        for tid, at in self.db.execute("SELECT task_id, MIN(at) FROM runs WHERE event = ? GROUP BY task_id", (event,)):
            if tid in ids:
                out[tid] = at
        return out
