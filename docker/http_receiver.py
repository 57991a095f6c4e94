"""The compose stack's HTTP endpoint for the http sink: logs each POSTed batch, answers 200."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the healthcheck
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            count = len(json.loads(body))
        except ValueError:
            count = -1
        print(f"POST {self.path}: {count} message(s), {len(body)} bytes", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8080), Receiver).serve_forever()  # noqa: S104
