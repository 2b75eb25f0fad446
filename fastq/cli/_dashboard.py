"""``fastq dashboard``: serve the web dashboard (extra ``dashboard``)."""
from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from typing import Any, Iterator

import click

from fastq.cli._base import Ctx, cli, safe_url

TOKEN_ENV = "FASTQ_DASHBOARD_TOKEN"
FORWARDED_ENV = "FASTQ_DASHBOARD_FORWARDED_ALLOW_IPS"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read the token file {path!r}: {exc}", param_hint="'--token-file'") from None
    if not token:
        raise click.BadParameter(f"the token file {path!r} is empty", param_hint="'--token-file'")
    return token


def _server_class(uvicorn: Any) -> Any:
    class Server(uvicorn.Server):  # type: ignore[misc]  # uvicorn is imported lazily, as Any
        """uvicorn's server, ending with exit code 0 after a graceful stop on SIGTERM/SIGINT
        (uvicorn re-raises the signal once it has shut down)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    captured = getattr(self, "_captured_signals", None)
                    if isinstance(captured, list):
                        captured.clear()
    return Server


def _refuse_token_argument(ctx: click.Context, param: click.Parameter, value: object) -> None:
    if value is not None:
        raise click.UsageError(f"do not pass the token on the command line (other users see it in ps): set "
                               f"{TOKEN_ENV} or use --token-file PATH")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port, printed).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help=f"Read the login token from this file (default: the {TOKEN_ENV} environment variable).")
@click.option("--no-auth", is_flag=True, help="Serve without a token (only on a loopback address).")
@click.option("--read-only", is_flag=True, help="Show everything, change nothing: no pause, run, archive, "
                                               "delete or cancel.")
@click.option("--show-payloads", is_flag=True, help="Show task payloads, results and header values "
                                                    "(hidden by default: they may hold personal data).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another host name browsers use to reach the dashboard (Host header check); repeatable.")
@click.option("--refresh", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between samples of the live throughput chart.")
@click.option("--forwarded-allow-ips", envvar=FORWARDED_ENV, show_envvar=True, default="127.0.0.1",
              show_default=True, metavar="ADDRS",
              help="Comma-separated addresses or networks (or *) of the TLS proxy in front: only from these "
                   "is X-Forwarded-Proto believed (https makes the session cookie Secure).")
@click.option("--token", hidden=True, expose_value=False, callback=_refuse_token_argument)
@click.pass_obj
def dashboard(ctx: Ctx, host: str, port: int, token_file: str | None, no_auth: bool, read_only: bool,
              show_payloads: bool, allowed_hosts: tuple[str, ...], refresh: float, forwarded_allow_ips: str) -> None:
    """Serve the web dashboard: queues, throughput, tasks, servers, periodic tasks, and actions.

    Log in with the token from $FASTQ_DASHBOARD_TOKEN (or --token-file). Binds 127.0.0.1
    unless --host says otherwise. Behind a TLS proxy, X-Forwarded-Proto is believed only from
    --forwarded-allow-ips. Needs: pip install 'fastq-tasks[dashboard]'.
    """
    if no_auth and (token_file or os.environ.get(TOKEN_ENV)):
        raise click.UsageError(f"--no-auth with a token ({TOKEN_ENV} or --token-file): choose one")
    if no_auth and not _is_loopback(host):
        raise click.UsageError(f"--no-auth is only allowed on a loopback address, not {host!r}: anyone who "
                               "can reach the port could pause queues and delete tasks")
    token = None
    if not no_auth:
        token = _read_token_file(token_file) if token_file else os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise click.UsageError(f"no dashboard token: set {TOKEN_ENV} or use --token-file PATH "
                                   "(or --no-auth on a loopback address)")
    try:
        import uvicorn

        from fastq.dashboard import LOOPBACK_HOSTS, DashboardConfig, create_app
    except ImportError as exc:
        raise click.ClickException(f"the dashboard needs its extra: pip install 'fastq-tasks[dashboard]' "
                                   f"({exc})") from None
    names = set(LOOPBACK_HOSTS) | {h.strip().lower() for h in allowed_hosts if h.strip()}
    if host not in ("0.0.0.0", "::", ""):
        names.add(host.lower().strip("[]"))
    try:
        config = DashboardConfig(redis=ctx.url, token=token, auth=not no_auth, read_only=read_only,
                                 show_payloads=show_payloads, allowed_hosts=tuple(sorted(names)),
                                 refresh_seconds=refresh, forwarded_allow_ips=tuple(forwarded_allow_ips.split(",")))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    sock = None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"fastq dashboard on http://{shown}:{bound_port}/ (Redis {safe_url(ctx.url)}"
               f"{', read-only' if read_only else ''}{', no authentication' if no_auth else ''})", err=True)
    if not _is_loopback(host):
        click.echo("warning: listening beyond loopback; put TLS in front of it (a reverse proxy: "
                   "--forwarded-allow-ips ADDRS if it runs on another host) and pass --allowed-host NAME "
                   "for the names browsers use", err=True)
    sys.stderr.flush()
    server = _server_class(uvicorn)(uvicorn.Config(create_app(config), log_level="warning", access_log=False,
                                           server_header=False, proxy_headers=False, lifespan="on"))
    server.run(sockets=[sock])
