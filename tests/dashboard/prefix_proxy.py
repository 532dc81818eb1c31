"""A reverse proxy serving a server under a path prefix, as nginx would serve XNAT at /xnat/:
`http://127.0.0.1:PORT/xnat/x` is fetched from `<target>/x` with `X-Forwarded-Prefix: /xnat`;
redirects and cookies of the target are rewritten to the prefix."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}


class PrefixProxy:
    def __init__(self, target: str, prefix: str = "/xnat") -> None:
        self.target, self.prefix = target.rstrip("/"), prefix
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                if not self.path.startswith(proxy.prefix + "/"):
                    self.send_error(404, "outside the proxied prefix")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP and k.lower() != "host"}  # fmt: skip
                headers["X-Forwarded-Prefix"] = proxy.prefix
                answer = requests.request(
                    self.command, proxy.target + self.path[len(proxy.prefix):], data=body,
                    headers=headers, allow_redirects=False, timeout=120)  # fmt: skip
                self.send_response(answer.status_code)
                for key, value in answer.raw.headers.items():
                    if key.lower() in HOP:
                        continue
                    if key.lower() == "location" and value.startswith("/"):
                        value = value if value.startswith(proxy.prefix + "/") else (
                            proxy.prefix + value)  # fmt: skip
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{prefix}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PrefixProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
