"""Real loopback servers the notification tests deliver to: an HTTP receiver (Apprise json://) and an SMTP
server (aiosmtpd). Both record what arrived; the HTTP one can refuse the next N requests (HTTP 500)."""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HttpReceiver:
    def __init__(self):
        self.received: list[dict] = []  # {"path", "title", "body", "type"}
        self.requests = 0
        self.refuse = 0  # answer the next N requests with HTTP 500
        self.refuse_all = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                if outer.refuse_all or outer.refuse > 0:
                    outer.refuse = max(0, outer.refuse - 1)
                    self.send_response(500)
                    self.end_headers()
                    return
                payload = json.loads(data)
                outer.received.append(
                    {
                        "path": self.path,
                        "title": payload.get("title"),
                        "body": payload.get("message"),
                        "type": payload.get("type"),
                    }
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "alerts") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def on(self, path: str) -> list[dict]:
        return [r for r in self.received if r["path"] == f"/{path}"]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpReceiver:
    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[dict] = []  # {"from", "to", "subject", "text"}
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                msg = message_from_bytes(envelope.content)
                text = next(
                    part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
                    for part in msg.walk()
                    if part.get_content_type() == "text/plain"
                )
                outer.messages.append(
                    {
                        "from": envelope.mail_from,
                        "to": list(envelope.rcpt_tos),
                        "subject": str(make_header(decode_header(msg["Subject"]))),
                        "text": text,
                    }
                )
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def url(self, to: str) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=alerts@citysafe.test&to={to}&mode=insecure"

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()
