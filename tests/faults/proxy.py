"""A tiny TCP proxy for network faults (the portable stand-in for netns/netem; fault rows N1-N4).

Modes: "pass" forwards bytes; "blackhole" keeps every connection open but forwards
nothing (a partition: the far end's sockets time out); "delay" forwards after a
fixed delay each way; "drop-replies" forwards commands to Redis but throws its
replies away (a reply lost after the command ran). Runs its own event loop in a thread.
"""
from __future__ import annotations

import asyncio
import threading


class Proxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer, replies=True),
                                 return_exceptions=True)
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool = False) -> None:
        """Forward one direction. Each chunk leaves ``delay`` seconds after it arrived (chunks
        do not queue behind each other's delay); in blackhole mode chunks are held back."""
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    return
                while self.mode == "blackhole":
                    await asyncio.sleep(0.05)
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                if data and replies and self.mode == "drop-replies":
                    continue
                delay = self.delay if self.mode == "delay" else 0.0
                queue.put_nowait((self._loop.time() + delay, data or None))
                if not data:
                    break
            await sender
            writer.close()  # one side hung up: hang up the other, so the opposite pipe ends too
        finally:
            sender.cancel()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # let the closed transports finish closing before the loop stops

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
