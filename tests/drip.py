"""A real local TCP server that answers HTTP a byte at a time (tests of call deadlines)."""

from __future__ import annotations

import socket
import threading

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"


Segments = list[tuple[bytes, float]]


class DripServer:
    """A real local TCP server: for each connection, reads one request per item of `answers` and
    sends that answer's segments in order, each one byte every `gap` seconds (`gap` 0: at once; an
    empty segment sleeps `gap` seconds). `tls`: an ssl server context. `handshake_drip`: instead of
    a TLS handshake, send a TLS record header announcing 16 KB, then a byte every 0.1 s."""

    def __init__(self, answers: list[Segments], *, tls=None, handshake_drip: bool = False):
        self.answers = answers
        self.tls = tls
        self.handshake_drip = handshake_drip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.connections = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _send(self, conn, data: bytes, gap: float) -> None:
        if not data:
            self.stopped.wait(gap)
        elif not gap:
            conn.sendall(data)
            return
        for i in range(len(data)):
            if self.stopped.is_set():
                return
            conn.sendall(data[i : i + 1])
            self.stopped.wait(gap)

    def _handle(self, conn) -> None:
        try:
            if self.handshake_drip:
                self._send(conn, b"\x16\x03\x03\x40\x00" + b"\x00" * 200, 0.1)
                return
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            reader = conn.makefile("rb")
            for segments in self.answers:
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if not line:
                    return
                reader.read(length)
                self.requests += 1
                for data, gap in segments:
                    self._send(conn, data, gap)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
