"""Real Redis topologies for the tests: a Redis Cluster, a Sentinel group, TLS certificates.

Every process is a local ``redis-server`` on a free port in the test's directory; nothing
is mocked. Used by tests/test_cluster.py, test_sentinel.py, test_tls.py and
tests/faults/test_topology_faults.py (start them once per module: each takes 1-3 s).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import redis
from helpers import free_port

REDIS_SERVER = shutil.which("redis-server")


def _free_ports(n: int, limit: int = 55535) -> list[int]:
    """``n`` distinct free ports at most ``limit`` (a cluster node refuses ports above 55535:
    its bus port would be port + 10000; we give the bus port explicitly anyway)."""
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p <= limit and p not in out:
            out.append(p)
    return out


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (redis.RedisError, OSError) as exc:
            last = exc
            last_value = None
        else:
            last_value = last
        if last_value:
            return last_value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Node:
    """One redis-server process (cluster node, master, replica or sentinel)."""

    def __init__(self, workdir: Path, port: int, args: list[str], sentinel_conf: Optional[str] = None,
                 client_kwargs: Optional[dict] = None) -> None:
        self.workdir = workdir
        self.port = port  # the port clients use (the TLS port of a TLS-only node)
        self.args = args
        self.sentinel_conf = sentinel_conf
        self.client_kwargs = client_kwargs  # redis-py arguments (TLS, password) for the harness's own clients
        self.proc: Optional[subprocess.Popen] = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> "Node":
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        if self.sentinel_conf is not None:
            conf = self.workdir / "sentinel.conf"
            if not conf.exists():  # Sentinel rewrites its file: write it once
                conf.write_text(self.sentinel_conf)
            cmd = [REDIS_SERVER, str(conf), "--sentinel"]
        else:
            cmd = [REDIS_SERVER]
        cmd += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--logfile", str(self.workdir / "redis.log"), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def wait_ready(self, timeout: float = 10.0, **client_kwargs) -> None:
        def ping() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self.proc.returncode}; "
                                   f"log: {self.log_tail()}")
            c = self.client(socket_connect_timeout=0.2, **client_kwargs)
            try:
                return bool(c.ping())
            finally:
                c.close()
        wait_until(ping, timeout, f"redis-server on port {self.port}")

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **{**(self.client_kwargs or {}), **kwargs})

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.workdir / "redis.log").read_text()[-n:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


# ---------------------------------------------------------------- Redis Cluster

class Cluster:
    """``masters`` masters (+ ``replicas`` replicas each) joined with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0, extra: Optional[list[str]] = None,
                 certs: Optional[dict] = None) -> None:
        self.workdir = Path(workdir)
        n = masters * (1 + replicas)
        ports = _free_ports(2 * n)
        self.nodes = []
        self.certs = certs
        tls_client = None
        if certs is not None:  # TLS only: clients, the cluster bus and replication
            tls_client = {"ssl": True, "ssl_ca_certs": str(certs["ca"]), "ssl_check_hostname": False}
        for i in range(n):
            port, bus = ports[2 * i], ports[2 * i + 1]
            d = self.workdir / f"node-{port}"
            tls = [] if certs is None else [*tls_args(certs, port, server="server-ip"), "--tls-cluster", "yes",
                                            "--tls-replication", "yes"]
            self.nodes.append(Node(d, port, [
                "--cluster-enabled", "yes", "--cluster-port", str(bus),
                "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", "1000",
                "--save", "", "--appendonly", "no", *tls, *(extra or [])], client_kwargs=tls_client))
        self.masters = masters
        self.replicas = replicas

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])
        if self.certs is not None:
            return f"rediss+cluster://{hosts}?tls_ca={self.certs['ca']}"
        return f"redis+cluster://{hosts}"

    def start(self) -> "Cluster":
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()
        tls = [] if self.certs is None else ["--tls", "--cacert", str(self.certs["ca"])]
        cmd = ["redis-cli", *tls, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
               "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        def ok() -> bool:
            for node in self.nodes:
                if not node.alive:
                    continue
                c = node.client(socket_timeout=1)
                try:
                    info = c.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info:
                        return False
                    # every node agrees on the slot map (all 16384 slots assigned)
                    if "cluster_slots_ok:16384" not in info:
                        return False
                finally:
                    c.close()
            return True
        wait_until(ok, timeout, "cluster_state:ok on every node")

    def node_of_slot(self, slot: int) -> Node:
        for node in self.nodes:
            if not node.alive:
                continue
            c = node.client(socket_timeout=1)
            try:
                for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
            finally:
                c.close()
        raise LookupError(slot)

    def node_ids(self) -> dict[int, str]:
        c = next(n for n in self.nodes if n.alive).client()
        try:
            out = {}
            for line in c.execute_command("CLUSTER", "NODES").decode().splitlines():
                parts = line.split()
                port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                out[port] = parts[0]
            return out
        finally:
            c.close()

    def primaries(self) -> list[Node]:
        out = []
        for node in self.nodes:
            if not node.alive:
                continue
            c = node.client(socket_timeout=1)
            try:
                if c.info("replication")["role"] == "master":
                    out.append(node)
            finally:
                c.close()
        return out

    def error_stats(self) -> dict[str, int]:
        """``INFO errorstats`` summed over the live nodes: ``{"CROSSSLOT": n, "MOVED": n, ...}``."""
        total: dict[str, int] = {}
        for node in self.nodes:
            if not node.alive:
                continue
            c = node.client(socket_timeout=1)
            try:
                for key, value in c.info("errorstats").items():
                    name = key.replace("errorstat_", "")
                    total[name] = total.get(name, 0) + int(value["count"])
            finally:
                c.close()
        return total

    def reset_error_stats(self) -> None:
        for node in self.nodes:
            if node.alive:
                c = node.client(socket_timeout=1)
                try:
                    c.config_resetstat()
                finally:
                    c.close()

    def flushall(self) -> None:
        for node in self.primaries():
            c = node.client()
            try:
                c.flushall()
                c.script_flush()
            finally:
                c.close()

    def migrate_slot(self, slot: int, target: Node, batch: int = 10,
                     between: Optional[Callable[[], None]] = None) -> int:
        """Move ``slot`` to ``target`` by hand, as ``redis-cli --cluster reshard`` does (IMPORTING /
        MIGRATING, MIGRATE in batches of ``batch`` keys, SETSLOT NODE everywhere); ``between`` runs
        after each batch (to let traffic hit the half-moved slot). Returns how many keys moved."""
        source = self.node_of_slot(slot)
        if source is target:
            raise ValueError("the slot is on the target already")
        ids = self.node_ids()
        src, dst = source.client(), target.client()
        moved = 0
        try:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port])
            while True:
                names = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not names:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *names)
                moved += len(names)
                if between is not None:
                    between()
            for node in self.nodes:
                if node.alive:
                    c = node.client()
                    try:
                        if c.info("replication")["role"] == "master":
                            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.port])
                    finally:
                        c.close()
        finally:
            src.close()
            dst.close()
        return moved

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# ---------------------------------------------------------------- Sentinel

class SentinelGroup:
    """A master, ``replicas`` replicas and ``sentinels`` sentinels watching it as ``name``."""

    def __init__(self, workdir: Path, name: str = "mymaster", replicas: int = 1, sentinels: int = 3,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000,
                 data_args: Optional[list[str]] = None, data_password: Optional[str] = None,
                 sentinel_password: Optional[str] = None) -> None:
        self.workdir = Path(workdir)
        self.name = name
        ports = _free_ports(1 + replicas + sentinels)
        auth = [] if data_password is None else ["--requirepass", data_password, "--masterauth", data_password]
        base = ["--save", "", "--appendonly", "no", "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0", *auth, *(data_args or [])]
        data_kwargs = {"password": data_password} if data_password else None
        self.master = Node(self.workdir / f"data-{ports[0]}", ports[0], base, client_kwargs=data_kwargs)
        self.replicas = [Node(self.workdir / f"data-{p}", p, [*base, "--replicaof", "127.0.0.1", str(ports[0])],
                              client_kwargs=data_kwargs) for p in ports[1:1 + replicas]]
        quorum = max(1, sentinels // 2 + 1)
        conf = (f"sentinel monitor {name} 127.0.0.1 {ports[0]} {quorum}\n"
                f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n")
        if data_password is not None:  # how Sentinel itself logs in to the data nodes
            conf += f"sentinel auth-pass {name} {data_password}\n"
        if sentinel_password is not None:  # clients (and the other sentinels) must log in to Sentinel
            conf += f"requirepass {sentinel_password}\nsentinel sentinel-pass {sentinel_password}\n"
        s_kwargs = {"password": sentinel_password} if sentinel_password else None
        self.sentinels = [Node(self.workdir / f"sentinel-{p}", p, [], sentinel_conf=conf, client_kwargs=s_kwargs)
                          for p in ports[1 + replicas:]]

    @property
    def data_nodes(self) -> list[Node]:
        return [self.master, *self.replicas]

    def url(self, scheme: str = "redis+sentinel", auth: str = "", query: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        q = f"master={self.name}" + (f"&{query}" if query else "")
        return f"{scheme}://{auth}{hosts}/0?{q}"

    def start(self, client_kwargs: Optional[dict] = None) -> "SentinelGroup":
        for node in self.data_nodes:
            node.start()
        for node in self.data_nodes:
            node.wait_ready(**(client_kwargs or {}))
        self.wait_synced(client_kwargs=client_kwargs)
        for s in self.sentinels:
            s.start()
        for s in self.sentinels:
            s.wait_ready()
        self.wait_sentinels_agree()
        return self

    def wait_synced(self, timeout: float = 20.0, client_kwargs: Optional[dict] = None) -> None:
        """Wait for master_link_status:up: a replica that has not finished its first sync would be promoted empty."""
        master = self.current_master() if any(s.alive for s in self.sentinels) else self.master

        def synced() -> bool:
            for node in self.data_nodes:
                if node is master or not node.alive:
                    continue
                c = node.client(socket_timeout=1, **(client_kwargs or {}))
                try:
                    info = c.info("replication")
                    if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                        return False
                finally:
                    c.close()
            return True
        wait_until(synced, timeout, "replicas synced (master_link_status:up)")

    def wait_sentinels_agree(self, timeout: float = 20.0) -> None:
        """Every sentinel knows the master, the replicas and the other sentinels."""
        want_replicas = sum(1 for n in self.replicas if n.alive)

        def agree() -> bool:
            for s in self.sentinels:
                if not s.alive:
                    continue
                c = s.client(socket_timeout=1)
                try:
                    m = c.sentinel_master(self.name)
                    if int(m["num-slaves"]) < want_replicas:
                        return False
                    if int(m["num-other-sentinels"]) < sum(1 for x in self.sentinels if x.alive) - 1:
                        return False
                    if m["is_sdown"] or m["is_odown"] or not m["is_master"]:
                        return False
                finally:
                    c.close()
            return True
        wait_until(agree, timeout, "sentinels agree on the master, its replicas and each other")

    def master_addr(self) -> tuple[str, int]:
        for s in self.sentinels:
            if s.alive:
                c = s.client(socket_timeout=1)
                try:
                    host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                    return host.decode(), int(port)
                except (redis.RedisError, OSError):
                    continue
                finally:
                    c.close()
        raise RuntimeError("no sentinel answers")

    def current_master(self) -> Node:
        _, port = self.master_addr()
        return next(n for n in self.data_nodes if n.port == port)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data_nodes]:
            node.stop()


# ---------------------------------------------------------------- TLS

def make_certs(directory: Path) -> dict[str, Path]:
    """Certificates made with the openssl command line: a CA; ``server`` for the name
    ``localhost`` only (so connecting to 127.0.0.1 must fail the host-name check unless
    ``tls_server_name=localhost``); ``server-ip`` for ``localhost`` and ``127.0.0.1``; a
    ``client`` certificate for mutual TLS; and ``other-ca``, a CA nobody trusts."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d, timeout=60)

    out: dict[str, Path] = {}
    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=fastq test {ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt")
        out[ca] = d / f"{ca}.crt"
    for name, ext in (("server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("server-ip",
                       "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=fastq {name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
        out[name] = d / f"{name}.crt"
        out[f"{name}-key"] = d / f"{name}.key"
    return out


def tls_args(certs: dict[str, Path], tls_port: int, mtls: bool = False, server: str = "server") -> list[str]:
    """redis-server flags: TLS only (``--port 0``), verify clients when ``mtls``."""
    return ["--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(certs[server]),
            "--tls-key-file", str(certs[f"{server}-key"]), "--tls-ca-cert-file", str(certs["ca"]),
            "--tls-auth-clients", "yes" if mtls else "no"]
