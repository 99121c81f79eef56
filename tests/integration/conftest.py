"""Integration fixtures for servers of one test (the session-wide ones are in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.worker_pages import poll
from warden.infra.dev import devstack
from warden.infra.dev.worker_process import child_process


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A Redis (or Valkey) server that needs AUTH: an ACL user ``warden`` and a default password."""
    password = "AuthTest-" + os.urandom(6).hex()
    port = devstack.free_port("127.0.0.1")
    argv = [
        devstack.redis_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
        "--requirepass",
        "default-" + password,
        "--user",
        "warden",
        "on",
        f">{password}",
        "~*",
        "&*",
        "+@all",
    ]
    with child_process(argv, None, tmp_path / "secured-redis.log") as proc:
        url = f"redis://127.0.0.1:{port}/0"

        def up() -> bool:
            assert proc.poll() is None, "the secured redis exited"
            try:
                return bool(redis.Redis.from_url(url, username="warden", password=password).ping())
            except redis.ConnectionError:
                return False

        poll(up, 20)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url).ping()  # no password: refused
        yield url, password
