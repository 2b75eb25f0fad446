"""TLS connection classes: verification always on, a bounded handshake, failures that say what to fix."""
from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Awaitable, Callable, Optional

import redis

from fastq.redis._compat import AsyncConnectHooks, SyncConnectHooks
from fastq.redis.errors import TLSHandshakeError
from fastq.redis.options import DEFAULT_TLS_HANDSHAKE_TIMEOUT, TLSConfig, _ssl_reason


def _describe_tls_failure(exc: BaseException, host: str, port: Any, name: str) -> str:
    reason = _ssl_reason(exc)
    where = f"TLS handshake with {host}:{port} failed: {reason}"
    if isinstance(exc, TimeoutError):
        return (f"TLS handshake with {host}:{port} timed out: the server never answered it (is this port TLS? "
                f"use redis:// for a plain-text port)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        where = f"TLS handshake with {host}:{port} failed: certificate verify failed: {reason}"
        if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
            return (f"{where} (the certificate does not name {name!r}; connect by a name the certificate "
                    f"carries or set tls_server_name)")
        return f"{where} (the server's certificate is not signed by a trusted CA: give its CA with tls_ca)"
    if "certificate required" in reason.lower() or "handshake failure" in reason.lower():
        return f"{where} (the server wants a client certificate: give tls_cert and tls_key)"
    if "wrong version number" in reason.lower() or "record layer" in reason.lower():
        return f"{where} (is this port TLS? use redis:// for a plain-text port)"
    return where


def _tls_failure(exc: BaseException, host: str, port: Any, name: str) -> TLSHandshakeError:
    reason = _ssl_reason(exc).lower()
    not_tls = isinstance(exc, ssl.SSLError) and ("wrong version number" in reason or "record layer" in reason)
    return TLSHandshakeError(_describe_tls_failure(exc, host, port, name), plain_text=not_tls)


def _plain_text_failure(host: str, port: Any, timeout: float) -> TLSHandshakeError:
    return TLSHandshakeError(
        f"TLS handshake with {host}:{port} failed: is this port TLS? It speaks plain text: it answered a plain-text "
        f"PING but not the handshake (in {timeout:g}s): use redis:// for it, or the port Redis serves TLS on",
        plain_text=True)


def _probe_timeout(timeout: Optional[float]) -> float:
    """A plain-text Redis answers PING in milliseconds; a black-holed host must not cost much more."""
    return min(1.0, timeout or 1.0)


def _is_plain_redis(reply: bytes) -> bool:
    """A RESP simple string or error (``+PONG``, ``-NOAUTH ...``) to ``PING``: a Redis speaking plain text."""
    return reply[:1] in (b"+", b"-") and reply.endswith(b"\r\n")


def _speaks_plain_redis(host: str, port: Any, timeout: float) -> bool:
    """Only after a TLS handshake timed out: does ``host:port`` answer a plain-text PING?"""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except (OSError, ValueError):
        return False
    return _is_plain_redis(reply)


async def _aspeaks_plain_redis(host: str, port: Any, timeout: float) -> bool:
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        writer.write(b"PING\r\n")
        reply = await asyncio.wait_for(reader.read(64), timeout)
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
    return _is_plain_redis(reply)


def _closed_after_handshake(exc: BaseException, tls: TLSConfig, host: str, port: Any) -> Optional[TLSHandshakeError]:
    """TLS 1.3 servers check the client certificate after the handshake: a server that wants one
    closes the connection at our first command. Say so instead of "EOF in violation of protocol"."""
    text = f"{exc} {exc.__cause__ or ''}".lower()
    if tls.cert_file is not None or not any(w in text for w in ("eof occurred", "certificate required",
                                                                 "connection reset", "closed by server")):
        return None
    return TLSHandshakeError(f"TLS handshake with {host}:{port} failed: the server closed the connection right after "
                             f"the handshake ({exc}); it probably wants a client certificate (tls-auth-clients "
                             f"yes): give tls_cert and tls_key")


class _SyncTLS(SyncConnectHooks):
    """Wrap the socket with fastq's TLS context (verification on; server name override)."""

    _fastq_tls: TLSConfig

    def fastq_setup_failed(self, exc: redis.exceptions.ConnectionError) -> Optional[BaseException]:
        return _closed_after_handshake(exc, self._fastq_tls, self.host, self.port)

    def fastq_wrap_socket(self, sock: socket.socket) -> socket.socket:
        name = self._fastq_tls.server_name or self.host
        # The handshake is bounded like the TCP connect, not by socket_timeout alone (often None or
        # long, it is for commands): a rediss:// URL for a plain-text port would wait that long.
        timeout = self.socket_connect_timeout
        if timeout is None:
            timeout = min(DEFAULT_TLS_HANDSHAKE_TIMEOUT, self.socket_timeout or DEFAULT_TLS_HANDSHAKE_TIMEOUT)
        try:
            sock.settimeout(timeout)
            wrapped = self._fastq_tls.context().wrap_socket(sock, server_hostname=name)
        except (ssl.SSLError, ssl.CertificateError, TimeoutError) as exc:  # TCP is up: this is the handshake
            sock.close()
            if isinstance(exc, TimeoutError) and not isinstance(exc, ssl.SSLError):
                if _speaks_plain_redis(self.host, self.port, _probe_timeout(timeout)):
                    raise _plain_text_failure(self.host, self.port, timeout) from None
                raise TLSHandshakeError(_describe_tls_failure(exc, self.host, self.port, name),
                                        timed_out=True) from None
            raise _tls_failure(exc, self.host, self.port, name) from None
        except OSError:
            sock.close()
            raise
        wrapped.settimeout(self.socket_timeout)
        return wrapped


class _AsyncTLS(AsyncConnectHooks):
    _fastq_tls: TLSConfig

    def fastq_setup_failed(self, exc: redis.exceptions.ConnectionError) -> Optional[BaseException]:
        return _closed_after_handshake(exc, self._fastq_tls, self.host, self.port)

    def fastq_open_arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["ssl"] = self._fastq_tls.context()
        kwargs["server_hostname"] = self._fastq_tls.server_name or self.host
        return kwargs

    def fastq_connect_failed(self, exc: redis.exceptions.ConnectionError) -> Optional[BaseException]:
        # redis-py wraps what the connect raised: give ours back unwrapped
        return exc.__cause__ if isinstance(exc.__cause__, TLSHandshakeError) else None

    async def fastq_open(self, connect: Callable[[], Awaitable[None]]) -> None:
        # redis-py bounds TCP connect + handshake by socket_connect_timeout, and not at all when it
        # is None: a rediss:// URL for a plain-text port would then wait forever.
        given = self.socket_connect_timeout
        timeout = DEFAULT_TLS_HANDSHAKE_TIMEOUT if given is None else given
        try:
            if given is None:
                await asyncio.wait_for(connect(), timeout)
            else:
                await connect()
        except (ssl.SSLError, ssl.CertificateError) as exc:
            name = self._fastq_tls.server_name or self.host
            raise _tls_failure(exc, self.host, self.port, name) from None
        except (asyncio.TimeoutError, TimeoutError):  # TCP connect or handshake: plain text if it answers PING
            if await _aspeaks_plain_redis(self.host, self.port, _probe_timeout(timeout)):
                raise _plain_text_failure(self.host, self.port, timeout) from None
            raise
