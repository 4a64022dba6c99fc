"""A TCP proxy in front of Redis that counts request/response turns.

A turn is a burst of bytes from the client after the server last spoke (or after
the connection opened): one command, one pipeline or one script call is one turn,
however many commands it carries. Summed over every connection through the proxy,
the growth of `turns` during one operation is how many sequential exchanges with
Redis that operation took.
"""

from __future__ import annotations

import asyncio
import contextlib


class TurnCounter:
    """Listens on 127.0.0.1:`port` and forwards to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.turns = 0
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        server_spoke = [True]  # a connection's first bytes are a turn

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                if server_spoke[0]:
                    self.turns += 1
                    server_spoke[0] = False
                up_writer.write(data)
                await up_writer.drain()

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                server_spoke[0] = True
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(client_to_server()), asyncio.create_task(server_to_client())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()
