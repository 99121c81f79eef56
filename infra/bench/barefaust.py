"""A bare Faust agent loop: the yardstick ``warden bench`` measures the pipeline against.

It consumes one topic and produces one record per input to another, with
Faust's default consumer settings (only the group timeouts shortened, as for
every process on the embedded broker), and nothing else: no parsing, no
store, no model. Run as ``python -m infra.bench.barefaust BROKER SOURCE SINK APP_ID PORT [OPTION ...]``
where each option is one thing Warden's worker does differently, to show what it is worth
alone: ``producer-batch`` takes the worker's producer batch size
(:data:`serving.worker.app.PRODUCER_BATCH_BYTES`); ``no-spinner`` drops Faust's terminal spinner,
which sets the root logger to DEBUG (:func:`serving.worker.run.without_spinner`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import faust


def main(argv: Sequence[str]) -> None:
    broker, source_name, sink_name, app_id, port, *options = argv
    unknown = set(options) - {"producer-batch", "no-spinner"}
    if unknown:
        raise SystemExit(f"barefaust: unknown option(s) {', '.join(sorted(unknown))}")
    tuned: dict[str, Any] = {}
    if "producer-batch" in options:
        from warden.serving.worker.app import PRODUCER_BATCH_BYTES

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
    worker = faust.Worker(app, loglevel="warn", quiet=True)
    if "no-spinner" in options:
        from warden.serving.worker.run import without_spinner

        without_spinner(worker)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
