"""Fixtures of the shared package's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.common import free_port
from tests.fixtures.redis import RedisServer, kill


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, which it may stop with SIGSTOP (resumed after)."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "own")
    server.start()
    try:
        yield server
    finally:
        kill(server)
