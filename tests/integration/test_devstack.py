"""The embedded stack starts, answers, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from warden.infra.dev import devstack
from warden.streams import broker
from warden.streams.settings import DevSettings, KafkaSettings
from warden.streams.topics import Topics


def test_running_stack_serves_and_stops(tmp_path: Path) -> None:
    with devstack.running(DevSettings(state_dir=tmp_path)) as state:
        assert redis.Redis.from_url(state.redis_url).ping()
        kafka = KafkaSettings(bootstrap_servers=state.bootstrap_servers, topic_prefix="dev-test.")
        created = broker.ensure_topics(kafka, Topics.from_settings(kafka).all())
        assert "dev-test.mail.events" in created
        pids = (state.broker_pid, state.redis_pid)
    for pid in pids:
        assert not devstack._alive(pid)


def test_dev_up_and_down_through_the_cli(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")},
        "WARDEN_DEV__STATE_DIR": str(tmp_path),
    }
    cli = [sys.executable, "-m", "warden.infra.cli"]
    up = subprocess.run([*cli, "dev", "up"], env=env, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert "WARDEN_KAFKA__BOOTSTRAP_SERVERS=" in up.stdout
    state = devstack.load_state(DevSettings(state_dir=tmp_path))
    assert state is not None
    try:
        assert redis.Redis.from_url(state.redis_url).ping()
        status = subprocess.run([*cli, "dev", "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0
    finally:
        down = subprocess.run([*cli, "dev", "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0
    assert "stopped" in down.stdout
    assert not devstack._alive(state.broker_pid)
    assert not devstack._alive(state.redis_pid)
