"""A bare Faust agent loop: the yardstick ``warden bench`` measures the pipeline against.

It consumes one topic and produces one record per input to another, with
Faust's default consumer settings (only the group timeouts shortened, as for
every process on the embedded broker), and nothing else: no parsing, no
store, no model. Run as ``python -m infra.barefaust BROKER SOURCE SINK APP_ID PORT [tuned]``;
with ``tuned`` it takes the producer batch size Warden's worker uses
(:data:`streams.app.PRODUCER_BATCH_BYTES`), to show what that one setting is worth.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import faust


def main(argv: Sequence[str]) -> None:
    broker, source_name, sink_name, app_id, port, *mode = argv
    tuned: dict[str, Any] = {}
    if mode == ["tuned"]:
        from streams.app import PRODUCER_BATCH_BYTES

        tuned["producer_max_batch_size"] = PRODUCER_BATCH_BYTES
    app = faust.App(
        app_id,
        broker=f"kafka://{broker}",
        store="memory://",
        autodiscover=False,
        web_port=int(port),
        web_bind="127.0.0.1",
        broker_session_timeout=6,
        broker_rebalance_timeout=6,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        **tuned,
    )
    source = app.topic(source_name, key_serializer="raw", value_serializer="raw")
    sink = app.topic(sink_name, key_serializer="raw", value_serializer="raw")

    async def passthrough(stream: Any) -> None:
        async for event in stream.events():
            await sink.send(key=event.message.key, value=event.message.value)

    app.agent(source, name=f"{app_id}.passthrough")(passthrough)
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
