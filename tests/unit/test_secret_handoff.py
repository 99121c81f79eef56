"""Secrets reach a child process through an inherited pipe, never its environment."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from warden.infra.cli.secret_handoff import argv, read_secrets, secrets_pipe
from warden.streams.exceptions import UsageError
from warden.streams.settings import WardenSettings, load_settings

KEY = "e3b1c2d4a5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
SETTINGS = WardenSettings(
    privacy={"hmac_key": KEY},
    redis={"password": "redis-" + KEY[:20]},
    feedback={"key_ops_review": KEY[::-1]},
).with_services("127.0.0.1:9", "redis://:in-the-url@127.0.0.1:9/0")

# The child: the settings it builds from its environment and the pipe, as the CLI builds them.
CHILD = """
import hashlib, json, os, sys
from warden.infra.cli.secret_handoff import read_secrets
from warden.streams.settings import load_settings
secrets = read_secrets(int(sys.argv[2]))
settings = load_settings(**secrets)
environ = open(f"/proc/{os.getpid()}/environ", "rb").read()
print(json.dumps({
    "key": hashlib.sha256(settings.privacy.hmac_key.get_secret_value().encode()).hexdigest(),
    "url": settings.redis.url.get_secret_value(),
    "prefix": settings.kafka.topic_prefix,
    "environ": environ.decode(errors="replace"),
    "still_open": os.path.exists(f"/proc/self/fd/{sys.argv[2]}"),
}))
"""


def test_a_child_gets_every_secret_through_the_pipe_and_none_in_its_environment() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")},
        **SETTINGS.model_copy(
            update={"kafka": SETTINGS.kafka.model_copy(update={"topic_prefix": "p."})}
        ).service_environment(),
    }
    with secrets_pipe(SETTINGS) as fd:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, *argv(fd)], env=env, pass_fds=(fd,), capture_output=True, check=True
        )
    seen = json.loads(done.stdout)
    assert seen["key"] == hashlib.sha256(KEY.encode()).hexdigest()
    assert seen["url"] == "redis://:in-the-url@127.0.0.1:9/0"
    assert seen["prefix"] == "p.", "non-secret settings still come through the environment"
    for value in (KEY, KEY[::-1], KEY[:20], "in-the-url"):
        assert value not in seen["environ"]
    assert not seen["still_open"], "the child closes the pipe once read"


def test_the_pipe_is_read_once_and_bad_documents_are_one_line_errors() -> None:
    with secrets_pipe(SETTINGS) as fd:
        copy = os.dup(fd)
        secrets = read_secrets(copy)
        assert load_settings(**secrets).privacy.hmac_key.get_secret_value() == KEY
        with pytest.raises(UsageError, match="cannot read secrets"):
            read_secrets(copy)  # closed after reading
    for payload, reason in (
        (b"not json", "does not hold a JSON"),
        (b'{"privacy": {"hmac_key": 7}}', "strings"),
    ):
        read_end, write_end = os.pipe()
        os.write(write_end, payload)
        os.close(write_end)
        with pytest.raises(UsageError, match=reason) as caught:
            read_secrets(read_end)
        assert "\n" not in str(caught.value)
