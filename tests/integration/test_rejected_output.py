"""A broker that refuses a worker's outputs: the worker stops, nothing is committed, nothing is lost.

The broker really refuses the records: an embedded Tansu, the same binary as
the session's, started with a schema registry (``--schema-registry``), which
refuses with INVALID_RECORD every record of a topic whose JSON schema it
does not satisfy. The session broker is started without one: Tansu 0.6
accepts records of any size whatever ``max.message.bytes`` says, and writes
to a deleted topic without complaint (it creates the topic again), so a
schema is its only way of refusing a produce; and validating costs every
produce on the session broker ~3x its throughput (measured), for all tests.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from tests.integration.outcomes import Outcomes, wait_until
from warden.infra.dev import devstack
from warden.infra.dev.devstack import StackState
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.children import die_with_parent
from warden.streams.exceptions import ExitCode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay, send_raw
from warden.streams.topics import Topics

N = 40
MALFORMED = [b"{not json", b'"a string"']
#: A JSON schema no Warden record satisfies (each is an object): the broker refuses them all.
REFUSE_EVERY_RECORD = {"type": "object", "properties": {"value": {"type": "array"}}}


@pytest.fixture(scope="module")
def validating_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A Tansu that validates records against ``<topic>.json`` schemas in a folder: address, folder."""
    run_dir = tmp_path_factory.mktemp("validating-broker")
    schemas = run_dir / "schemas"
    schemas.mkdir()
    host = "127.0.0.1"
    port = devstack.free_port(host)
    with (run_dir / "broker.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                devstack.broker_binary(),
                "broker",
                "--listener-url",
                f"tcp://{host}:{port}",
                "--advertised-listener-url",
                f"tcp://{host}:{port}",
                "--storage-engine",
                "memory://tansu/",
                # Tansu joins a file:// path to its working directory.
                "--schema-registry",
                "file://./schemas",
            ],
            cwd=run_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    try:
        address = f"{host}:{port}"
        deadline = time.monotonic() + 30
        while not devstack._kafka_ready(address):
            assert proc.poll() is None, f"the validating broker exited with status {proc.returncode}"
            assert time.monotonic() < deadline, "the validating broker did not start"
            time.sleep(0.1)
        yield address, schemas
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def committed(settings: WardenSettings, topic: str) -> dict[int, int]:
    """The worker group's committed offsets on ``topic``, by partition (absent: none committed)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        offsets = admin.list_group_offsets(settings.worker.app_id)[settings.worker.app_id]
    finally:
        admin.close()
    return {tp.partition: m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset >= 0}


@pytest.mark.parametrize(
    ("split_stages", "refused", "held"),
    [
        (False, "verdicts", "mail_events"),  # one hop: the ingest agent scores and sends verdicts
        (True, "mail_features", "mail_events"),  # split: the ingest agent's features are refused
        (True, "verdicts", "mail_features"),  # split: the scoring agent's verdicts are refused
    ],
    ids=["one-hop", "split-features-refused", "split-verdicts-refused"],
)
def test_refused_outputs_stop_the_worker_and_their_input_is_read_again(
    settings: WardenSettings,
    stack: StackState,
    validating_broker: tuple[str, Path],
    base_env: dict[str, str],
    tmp_path: Path,
    split_stages: bool,
    refused: str,
    held: str,
) -> None:
    address, schemas = validating_broker
    settings = settings.with_services(address, stack.redis_url).model_copy(
        update={"worker": settings.worker.model_copy(update={"split_stages": split_stages})}
    )
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    refusal = schemas / f"{getattr(topics, refused).name}.json"
    refusal.write_text(json.dumps(REFUSE_EVERY_RECORD))
    input_topic = getattr(topics, held).name
    records_on_input = N if held == "mail_features" else N + len(MALFORMED)  # malformed: no features

    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:N]
    producer = broker.producer(settings.kafka)
    replay([m.event for m in mails], producer, topics.mail_events)
    send_raw(producer, [(topics.mail_events, b"bad", raw) for raw in MALFORMED])
    producer.close()

    with worker_process(settings, base_env, tmp_path / "refused.log") as first:
        wait_healthy(settings, first, timeout_s=90)
        # The records are refused, sent again three times (0.5 + 1 + 2 s), then the worker stops.
        status = first.wait(timeout=120)
    log = (tmp_path / "refused.log").read_text(errors="replace")
    print(f"the worker exited with status {status}")
    assert status == ExitCode.OUTPUT_NOT_CONFIRMED, "a worker whose outputs are refused must fail"
    assert "the broker refused" in log
    assert "stopping without a commit" in log
    # Never committed past an unconfirmed output: every output of the agent reading ``held``
    # was refused, so none of its offsets was committed.
    assert committed(settings, input_topic) == {}

    refusal.unlink()  # the broker takes them again
    outcomes = Outcomes(settings)
    with worker_process(settings, base_env, tmp_path / "after.log") as second:
        wait_healthy(settings, second, timeout_s=90)
        outcomes.read_until(lambda o: len(o.verdicts) >= N and len(o.dead_letters) >= 2, timeout_s=120)
        outcomes.drain()
        assert second.poll() is None
        # And now that the outputs are confirmed, the offsets are committed (every second).
        wait_until(
            lambda: sum(committed(settings, input_topic).values()) == records_on_input,
            timeout_s=30,
            what="the offsets' commit",
        )
    outcomes.close()

    # The input was read again: every mail has its verdict, nothing was lost.
    assert set(outcomes.verdicts) == {m.event.event_id for m in mails}
    letters = [letter for copies in outcomes.dead_letters.values() for letter in copies]
    assert {letter.payload() for letter in letters} == set(MALFORMED)
