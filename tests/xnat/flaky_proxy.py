"""A loopback TCP proxy that breaks chosen requests, to test retries and atomicity for real.

Requests are recognised by the first bytes the client sends on a connection turn (request line
and headers arrive together). Faults, each used once when armed:
- "cut_request": forward the headers and `cut_after` body bytes, then close both sides;
- "drop_response": forward the whole request, let the server finish it, close the client side
  instead of relaying the answer (the work is done, the client does not know);
- "gone": as "drop_response", then the server seems gone: every later connection is closed at
  once until `down` is set back to False;
- "hold": swallow the request and never answer (a client stuck mid-upload, to be killed).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


@dataclass
class FlakyProxy:
    upstream_port: int
    match: bytes = b"extract=true"
    fault: str | None = None
    cut_after: int = 200_000
    faults_done: int = 0
    down: bool = False
    _server: socket.socket = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def arm(self, fault: str) -> None:
        self.fault = fault

    def close(self) -> None:
        self._server.close()

    def _take_fault(self, chunk: bytes) -> str | None:
        head = chunk.split(b"\r\n", 1)[0]
        with self._lock:
            if self.fault and chunk.startswith((b"PUT ", b"GET ")) and self.match in head:
                fault, self.fault = self.fault, None
                self.faults_done += 1
                return fault
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.down:
                _close(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"drop_response": False}
            threading.Thread(target=self._client_to_server, args=(client, upstream, state),
                             daemon=True).start()  # fmt: skip
            threading.Thread(target=self._server_to_client, args=(upstream, client, state),
                             daemon=True).start()  # fmt: skip

    def _client_to_server(self, client, upstream, state) -> None:
        budget = None  # body bytes still allowed through while cutting a request
        try:
            while chunk := client.recv(65536):
                fault = self._take_fault(chunk)
                if fault in ("drop_response", "gone"):
                    state["drop_response"] = True
                    self.down = self.down or fault == "gone"
                elif fault == "hold":
                    state["hold"] = True
                elif fault == "cut_request":
                    budget = self.cut_after + len(chunk)
                if state.get("hold"):
                    continue
                if budget is not None:
                    upstream.sendall(chunk[:budget])
                    budget -= len(chunk)
                    if budget <= 0:
                        break
                else:
                    upstream.sendall(chunk)
        except OSError:
            pass
        _close(client, upstream)

    def _server_to_client(self, upstream, client, state) -> None:
        try:
            while chunk := upstream.recv(65536):
                if state["drop_response"]:
                    break
                client.sendall(chunk)
        except OSError:
            pass
        _close(client, upstream)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
