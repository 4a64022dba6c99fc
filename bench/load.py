"""Load generators: `wrk` when it is on PATH, else a Python asyncio HTTP/1.1 client.

Both keep `connections` keep-alive connections busy for `seconds`, each request a
`POST path` with the next body of a list (distinct codes), or a `GET path` with the
next bearer token of a list, and the next
`X-Forwarded-For` address (so per-address limits never meet), and report requests/s,
p50/p99 latency and how many answers were not 2xx.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

WRK_SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local n = 0
request = function()
  n = n + 1
  local i = %(first)d + n
  local ip = string.format("10.%%d.%%d.%%d", math.floor(i / 65536) %% 256,
                           math.floor(i / 256) %% 256, i %% 256)
  local item = bodies[(n - 1) %% #bodies + 1]
  if "%(method)s" == "GET" then
    return wrk.format("GET", "%(path)s",
                      {["Authorization"] = "Bearer " .. item, ["X-Forwarded-For"] = ip})
  end
  return wrk.format("POST", "%(path)s",
                    {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, item)
end
"""


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # answers that were not 2xx, and socket errors


def generator() -> str:
    """`wrk` when on PATH (BENCH_GENERATOR=python forces the fallback)."""
    if os.environ.get("BENCH_GENERATOR") != "python" and shutil.which("wrk"):
        return "wrk"
    return "python-asyncio"


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def run(url: str, path: str, items: list[str], *, seconds: float, connections: int,
        workdir: Path, method: str = "POST", first_address: int = 0) -> LoadResult:
    """`items` are request bodies for POST, bearer tokens for GET. The nth request comes
    from `address(first_address + n)`: runs that must not share addresses (and so
    per-address budgets) start apart."""
    if generator() == "wrk":
        return _wrk(url, path, items, seconds=seconds, connections=connections,
                    workdir=workdir, method=method, first=first_address)
    return asyncio.run(_python(url, path, items, seconds=seconds, connections=connections,
                               method=method, first=first_address))


# -- wrk ----------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _wrk(url: str, path: str, bodies: list[str], *, seconds: float, connections: int,
         workdir: Path, method: str, first: int) -> LoadResult:
    body_file = workdir / f"bodies-{time.monotonic_ns()}.txt"
    body_file.write_text("\n".join(bodies) + "\n")
    script = workdir / f"wrk-{time.monotonic_ns()}.lua"
    script.write_text(WRK_SCRIPT % {"bodies": body_file, "path": path, "method": method,
                                    "first": first})
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(script),
         url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult(rps=rps, p50_ms=_ms(latency["50"]), p99_ms=_ms(latency["99"]),
                      requests=requests, errors=errors)


# -- the Python fallback --------------------------------------------------------------------


async def _python(url: str, path: str, bodies: list[str], *, seconds: float,
                  connections: int, method: str, first: int) -> LoadResult:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    counter = 0
    warm_until = time.monotonic() + 0.5
    deadline = warm_until + seconds

    async def connection() -> None:
        nonlocal errors, counter
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while (now := time.monotonic()) < deadline:
                counter += 1
                item = bodies[(counter - 1) % len(bodies)]
                head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" \
                    f"X-Forwarded-For: {address(first + counter)}\r\n"
                if method == "GET":
                    writer.write(f"{head}Authorization: Bearer {item}\r\n\r\n".encode())
                else:
                    body = item.encode()
                    writer.write(f"{head}Content-Type: application/json\r\n"
                                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                answer = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", answer)
                await reader.readexactly(int(length.group(1)) if length else 0)
                if now >= warm_until:
                    latencies.append(time.monotonic() - now)
                    if not answer.startswith(b"HTTP/1.1 2"):
                        errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    latencies.sort()
    return LoadResult(
        rps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        requests=len(latencies),
        errors=errors,
    )


def percentile(values: list[float], p: float) -> float:
    """The `p`th percentile of sorted `values` (nearest rank)."""
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, round(p / 100 * len(values) + 0.5) - 1))
    return values[rank]
