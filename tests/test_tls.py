"""TLS against real TLS-only redis-servers, with a CA made by openssl in the test.

Verification is on by default and cannot be turned off: an unknown CA, a certificate that does
not name the host, a missing client certificate (mutual TLS) and a plain-text port each fail
with ``TLSHandshakeError`` saying what to fix; nothing ever falls back to plain text. The
positive paths run the client, a worker (asyncio + hiredis packing over TLS), the Inspector,
the ``fastq`` CLI with ``--tls-*`` flags, ``fastq-supervisor`` and a Redis Cluster over TLS.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest
import redis
from click.testing import CliRunner
from helpers import RunningWorker, async_wait_for, free_port, wait_for
from topology import Cluster, Node, make_certs, tls_args

import fastq
from fastq import keys
from fastq.cli import cli as cli_group
from fastq.cli import main as cli_main
from fastq.connection import ConnectionConfigError, TLSHandshakeError, parse_url

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def _tls_node(directory, certs, mtls: bool) -> Node:
    port = free_port()
    client = {"ssl": True, "ssl_ca_certs": str(certs["ca"]), "ssl_check_hostname": False}
    if mtls:
        client.update(ssl_certfile=str(certs["client"]), ssl_keyfile=str(certs["client-key"]))
    node = Node(directory, port, ["--save", "", "--appendonly", "no", *tls_args(certs, port, mtls=mtls)],
                client_kwargs=client)
    node.start()
    node.wait_ready()
    return node


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certs):
    node = _tls_node(tmp_path_factory.mktemp("tls"), certs, mtls=False)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, certs):
    node = _tls_node(tmp_path_factory.mktemp("mtls"), certs, mtls=True)
    yield node
    node.stop()


@pytest.fixture
def tls(tls_server, certs):
    """(URL with the CA, plain admin client) for the TLS server, flushed."""
    admin = tls_server.client()
    admin.flushall()
    yield f"rediss://localhost:{tls_server.port}/0?tls_ca={certs['ca']}", admin
    admin.close()


def fq(*args: str) -> tuple[int, str]:
    with CliRunner().isolation() as streams:
        try:
            cli_main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, streams[0].getvalue().decode() + streams[1].getvalue().decode()


# ---------------------------------------------------------------- refusals

def test_verification_is_on_by_default_an_unknown_ca_is_refused(tls_server):
    url = f"rediss://localhost:{tls_server.port}/0"  # no tls_ca: the system store does not know our CA
    started = time.monotonic()
    with pytest.raises(TLSHandshakeError) as err:
        fastq.Client(url).enqueue(fastq.Task("t"))
    assert time.monotonic() - started < 10
    text = str(err.value)
    assert "certificate verify failed" in text and "give its CA with tls_ca" in text, text
    assert isinstance(err.value, redis.ConnectionError)  # fastq's loops treat it as a connection problem

    async def async_side():
        async with fastq.AsyncClient(url) as ac:
            await ac.enqueue(fastq.Task("t"))
    with pytest.raises(TLSHandshakeError, match="give its CA with tls_ca"):
        asyncio.run(async_side())
    code, out = fq("--redis-url", url, "stats")
    assert code == 1 and out.startswith("Error: TLS handshake with localhost:") and out.count("\n") == 1, out


def test_a_ca_that_did_not_sign_the_server_certificate_is_refused(tls_server, certs):
    url = f"rediss://localhost:{tls_server.port}/0?tls_ca={certs['other-ca']}"
    with pytest.raises(TLSHandshakeError, match="not signed by a trusted CA"):
        fastq.Inspector(url).queues()


def test_a_certificate_for_another_host_name_is_refused_and_server_name_fixes_it(tls_server, certs):
    ip_url = f"rediss://127.0.0.1:{tls_server.port}/0?tls_ca={certs['ca']}"  # the certificate names localhost only
    with pytest.raises(TLSHandshakeError) as err:
        fastq.Client(ip_url).enqueue(fastq.Task("t"))
    assert "does not name '127.0.0.1'" in str(err.value) and "tls_server_name" in str(err.value)
    with pytest.raises(TLSHandshakeError, match="does not name 'redis.example'"):
        fastq.Client(ip_url + "&tls_server_name=redis.example").enqueue(fastq.Task("t"))
    with fastq.Client(ip_url + "&tls_server_name=localhost") as client:
        assert client.enqueue(fastq.Task("t"), queue="named").queue == "named"


def test_tls_never_falls_back_to_plain_text(tls_server, certs, redis_url):
    plain_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(TLSHandshakeError, match="is this port TLS"):  # a Redis port waits for a newline
        fastq.Client(f"rediss://localhost:{plain_port}/0?tls_ca={certs['ca']}&socket_timeout=1").enqueue(
            fastq.Task("t"))
    with pytest.raises(redis.ConnectionError):  # plain text to the TLS port: the server hangs up
        fastq.Client(f"redis://127.0.0.1:{tls_server.port}/0?socket_timeout=2").enqueue(fastq.Task("t"))
    assert not redis.Redis.from_url(redis_url).keys("*")


def test_mutual_tls_needs_the_client_certificate(mtls_server, certs):
    base = f"rediss://localhost:{mtls_server.port}/0?tls_ca={certs['ca']}"
    for _ in range(5):  # TLS 1.3: the refusal comes as an alert or a closed socket, depending on timing
        with pytest.raises(TLSHandshakeError, match="give tls_cert and tls_key"):
            fastq.Client(base).enqueue(fastq.Task("t"))

    async def async_side():
        async with fastq.AsyncClient(base) as ac:
            await ac.enqueue(fastq.Task("t"))
    with pytest.raises(TLSHandshakeError, match="give tls_cert and tls_key"):
        asyncio.run(async_side())
    url = f"{base}&tls_cert={certs['client']}&tls_key={certs['client-key']}"
    with fastq.Client(url) as client:
        info = client.enqueue(fastq.Task("m", b"mtls"), queue="m")
    seen = []

    async def drain():
        async with RunningWorker(lambda t: seen.append(t.payload), url, queues={"m": 1}):
            await async_wait_for(lambda: seen, timeout=5, what="task over mutual TLS")
    asyncio.run(drain())
    assert seen == [b"mtls"] and not mtls_server.client().exists(keys.task_key("m", info.id))


@pytest.mark.parametrize("query, fragment", [
    ("tls_ca=/nonexistent/ca.pem", "tls ca_file: no such file"),
    ("tls_ca={server-key}", "not a PEM CA certificate"),
    ("tls_ca={ca}&tls_cert={client}&tls_key={server-key}", "not a PEM certificate and matching private key"),
    ("tls_ca={ca}&tls_key={client-key}", "key_file given without cert_file"),
    ("tls_ca={ca}&ssl_ca_certs={ca}", "repeats another option"),
    ("tls_ca={ca}&tls_server_name=a/b", "is not a host name"),
])
def test_bad_tls_files_and_options_are_refused_before_connecting(certs, query, fragment):
    url = "rediss://:S3CRET@localhost:1/0?" + query.format(**{k: str(v) for k, v in certs.items()})
    with pytest.raises(ConnectionConfigError) as err:
        parse_url(url)
    assert fragment in str(err.value) and "S3CRET" not in str(err.value)
    with pytest.raises(ConnectionConfigError):
        fastq.Client(url)


def test_cli_tls_flags_and_their_bad_input(tls, certs, tls_server):
    url, admin = tls
    plain = f"rediss://localhost:{tls_server.port}/0"
    code, out = fq("--redis-url", plain, "--tls-ca", str(certs["ca"]), "enqueue", "t", "x", "--queue", "cli")
    assert code == 0, out
    code, out = fq("--redis-url", plain, "--tls-ca", str(certs["ca"]), "queue", "ls")
    assert code == 0 and out.split() == ["cli"]
    env_run = CliRunner().invoke(cli_group, ["queue", "ls"],  # the flags' environment variables
                                 env={"FASTQ_REDIS_URL": plain, "FASTQ_TLS_CA": str(certs["ca"])})
    assert env_run.exit_code == 0 and env_run.output.split() == ["cli"], env_run.output
    for args, fragment in (
        (["--redis-url", plain, "--tls-ca", "/nonexistent.pem"], "no such file"),
        (["--redis-url", f"redis://localhost:{tls_server.port}/0", "--tls-ca", str(certs["ca"])], "need a TLS URL"),
        (["--redis-url", url, "--tls-ca", str(certs["ca"])], "given both in the URL and as an option"),
        (["--redis-url", plain, "--tls-key", str(certs["client-key"])], "key_file given without cert_file"),
    ):
        code, out = fq(*args, "queue", "ls")
        assert code == 2 and fragment in out and out.count("\n") == 1, (args, out)
    assert admin.smembers(keys.ALL_QUEUES) == {b"cli"}


# ---------------------------------------------------------------- working over TLS

def test_client_worker_inspector_over_tls(tls):
    url, admin = tls
    with fastq.Client(url) as client:
        ids = [i.id for i in client.enqueue_many([fastq.Task("t", b"%d" % n) for n in range(50)], queue="secure")]
        failing = client.enqueue(fastq.Task("fail"), queue="secure", max_retry=0).id
    seen = []

    async def handler(task):
        if task.type == "fail":
            raise RuntimeError("no")
        seen.append(fastq.get_task_id())

    async def drain():
        async with fastq.AsyncClient(parse_url(url)) as ac:  # an option object works as well as the URL
            ids.append((await ac.enqueue(fastq.Task("t", b"async"), queue="secure")).id)
        async with RunningWorker(handler, url, queues={"secure": 1}):
            await async_wait_for(lambda: set(ids) <= set(seen) and admin.zcard(keys.archived_key("secure")),
                                 timeout=10, what="drain over TLS")
    asyncio.run(drain())
    ins = fastq.Inspector(url)
    assert ins.get_queue_info("secure").archived == 1
    assert ins.get_task_info("secure", failing).last_err == "RuntimeError: no"
    ins.close()


APP = textwrap.dedent('''
    import fastq
    mux = fastq.ServeMux()

    @mux.handle("tls")
    def handle(task):
        with open(task.payload.decode(), "a") as f:
            f.write(fastq.get_task_id() + "\\n")
''')


def test_supervisor_over_tls_with_flags(tls, certs, tls_server, tmp_path):
    url, admin = tls
    (tmp_path / "tls_app.py").write_text(APP)
    out = tmp_path / "done.txt"
    with fastq.Client(url) as client:
        ids = {client.enqueue(fastq.Task("tls", str(out).encode())).id for _ in range(20)}
    plain = f"rediss://localhost:{tls_server.port}/0"
    proc = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", "tls_app:mux", "--redis-url", plain,
                             "--tls-ca", str(certs["ca"]), "--processes", "1", "--shutdown-timeout", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        wait_for(lambda: out.exists() and set(out.read_text().split()) == ids, timeout=20, what="tasks over TLS")
    finally:
        proc.terminate()
        log, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    bad = subprocess.run([sys.executable, "-m", "fastq.cli.supervisor", "tls_app:mux", "--redis-url", plain,
                          "--tls-ca", str(certs["other-ca"]) + ".missing"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_redis_cluster_over_tls(tmp_path, certs):
    """Three TLS-only cluster nodes (bus and replication over TLS too); the nodes announce
    127.0.0.1, which their certificate names, so verification stays on end to end."""
    cluster = Cluster(tmp_path, masters=3, certs=certs).start()
    try:
        url = cluster.url
        with fastq.Client(url) as client:
            ids = []
            for q in ("a", "b", "c", "d"):
                ids += [i.id for i in client.enqueue_many([fastq.Task("t")] * 10, queue=q)]
        seen = []

        async def drain():
            async with RunningWorker(lambda t: seen.append(fastq.get_task_id()), url,
                                     queues={"a": 1, "b": 1, "c": 1, "d": 1}):
                await async_wait_for(lambda: set(ids) <= set(seen), timeout=10, what="drain on a TLS cluster")
        asyncio.run(drain())
        assert sorted(fastq.Inspector(url).queues()) == ["a", "b", "c", "d"]
        with pytest.raises(TLSHandshakeError):  # and without the CA it is refused
            fastq.Client(url.split("?")[0]).enqueue(fastq.Task("t"))
    finally:
        cluster.stop()
