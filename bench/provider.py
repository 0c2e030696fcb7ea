"""A minimal provider for benchmarks: answers every request with 200 JSON after --delay-ms.

One asyncio process, HTTP/1.1 with keep-alive, thousands of connections at once: it stands in for an
external provider, so it should cost this machine as little CPU as possible (a threaded WSGI server
spent about as much CPU per call as the worker being measured).

`POST .../chat/completions` gets a valid OpenAI chat-completions body (so it also stands in for an AI
model); every other request gets a short JSON body (an SMS or email provider, a callback receiver).

With `--record FILE`, each request's arrival (time.monotonic(), as soon as its head is read) and its
Idempotency-Key are appended to FILE, one line each: the tests measure delivery rates at the provider
with it.

Usage: python bench/provider.py --port 8099 [--delay-ms 100] [--record FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import IO


def response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


RESPONSE = response(b'{"id":"bench","status":"queued"}')
CHAT_RESPONSE = response(
    json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "bench reply"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        },
        separators=(",", ":"),
    ).encode()
)


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, record: IO[str] | None
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.monotonic()
            request_line, *headers = head.split(b"\r\n")
            method, _, rest = request_line.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0].rstrip(b"/")
            length = 0
            for line in headers:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
                elif record and name.strip().lower() == b"idempotency-key":
                    record.write(f"{arrived:.6f} {value.strip().decode()}\n")
                    record.flush()
            if length:
                await reader.readexactly(length)
            if delay:
                await asyncio.sleep(delay)
            chat = method == b"POST" and path.endswith(b"/chat/completions")
            writer.write(CHAT_RESPONSE if chat else RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, delay: float, record: IO[str] | None = None) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, delay, record), "127.0.0.1", port, backlog=4096, limit=1 << 20
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--record", help="append each request's arrival time and Idempotency-Key here")
    options = parser.parse_args()
    record = open(options.record, "a") if options.record else None  # noqa: SIM115 - open while serving
    asyncio.run(serve(options.port, options.delay_ms / 1000, record))


if __name__ == "__main__":
    main()
