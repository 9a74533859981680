"""Clients that trickle a request header, as an attacker holding connections open would.

`python -m tests.slowloris PORT REQUEST_LINE COUNT SECONDS` keeps COUNT connections on
127.0.0.1:PORT, each sending one more header line every 2 s and reconnecting when the server cuts
it, for SECONDS; then prints JSON: the most connections open at once (`peak`), how many the
server cut (`cut`) and how many were opened (`connects`). Run in its own process so its work
does not slow the client whose answers a test times.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

LINE_EVERY = 2.0


class Trickle:
    """COUNT trickling connections to one port, for a bounded time."""

    def __init__(self, port: int, request_line: bytes, count: int, seconds: float) -> None:
        self.port, self.request_line, self.count, self.seconds = port, request_line, count, seconds
        self.open = self.peak = self.cut = self.connects = 0

    async def run(self) -> dict[str, int]:
        """Trickle until the time is up; the counts."""
        stop_at = time.monotonic() + self.seconds
        await asyncio.gather(*(self._client(stop_at) for _ in range(self.count)))
        return {"peak": self.peak, "cut": self.cut, "connects": self.connects}

    async def _client(self, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            self.connects += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
            try:
                if await self._trickle(reader, writer, stop_at):
                    self.cut += 1
            except OSError:
                self.cut += 1
            finally:
                self.open -= 1
                writer.close()

    async def _trickle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop_at: float
    ) -> bool:
        """Send the header a line at a time; True when the server closed the connection."""
        writer.write(self.request_line + b"\r\nHost: 127.0.0.1\r\n")
        line = 0
        while time.monotonic() < stop_at:
            try:
                if await asyncio.wait_for(reader.read(1024), LINE_EVERY) == b"":
                    return True
            except TimeoutError:
                pass
            line += 1
            writer.write(b"X-Slow-%d: %d\r\n" % (line, line))
            await writer.drain()
        return False


def main() -> int:
    """Parse the arguments, trickle, print the counts."""
    port, request_line, count, seconds = sys.argv[1:5]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * int(count) and (hard == resource.RLIM_INFINITY or hard >= 2 * int(count)):
        resource.setrlimit(resource.RLIMIT_NOFILE, (2 * int(count), hard))
    trickle = Trickle(int(port), request_line.encode(), int(count), float(seconds))
    print(json.dumps(asyncio.run(trickle.run())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
