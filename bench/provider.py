"""A minimal provider for benchmarks: answers every request with 200 JSON after --delay-ms.

One asyncio process, HTTP/1.1 with keep-alive, thousands of connections at once: it stands in for an
external provider, so it should cost this machine as little CPU as possible (a threaded WSGI server
spent about as much CPU per call as the worker being measured).

`POST .../chat/completions` gets a valid OpenAI chat-completions body (so it also stands in for an AI
model); every other request gets a short JSON body (an SMS or email provider, a callback receiver).

Usage: python bench/provider.py --port 8099 [--delay-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json


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


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *headers = head.split(b"\r\n")
            method, _, rest = request_line.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0].rstrip(b"/")
            length = 0
            for line in headers:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
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


async def serve(port: int, delay: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, delay), "127.0.0.1", port, backlog=4096, limit=1 << 20
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    options = parser.parse_args()
    asyncio.run(serve(options.port, options.delay_ms / 1000))


if __name__ == "__main__":
    main()
