"""A sink for benchmarks: answers every POST 200 with an empty body and counts them.

    .venv/bin/python -m benchmarks.sink PORT

It stands in for a payload logger's event receiver (KServe's message dumper, a Kafka
bridge) and for an OTLP/HTTP trace collector (an empty body is a valid, empty
``ExportTraceServiceResponse``). ``GET /count`` answers how many POSTs arrived.
uvicorn with httptools, one process: some 10,000 events a second on one core.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

received = 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global received
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the body
        message = await receive()
        more = message.get("more_body", False)
    body = b""
    if scope["method"] == "POST":
        received += 1
    else:
        body = str(received).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", http="httptools", loop="uvloop"
    )
