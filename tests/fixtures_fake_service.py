"""A stand-in service for supervisor tests: ``python -m fixtures_fake_service`` (with tests/ on PYTHONPATH).

It honours the same environment as a real service (``VIGIL_HTTP_HOST``, ``VIGIL_HTTP_PORT``, ``VIGIL_SERVICE_NAME``)
and answers ``/healthz`` and ``/readyz``. ``FAKE_SERVICE_MODE`` picks a misbehaviour: ``crash`` (exit 3 at once),
``never-ready`` (``/readyz`` answers 503 forever); ``FAKE_SERVICE_TARGET`` limits it to the service of that name.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

NAME = os.environ.get("VIGIL_SERVICE_NAME", "fake")
TARGETED = os.environ.get("FAKE_SERVICE_TARGET", NAME) == NAME
MODE = os.environ.get("FAKE_SERVICE_MODE", "ok") if TARGETED else "ok"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, {"status": "ok", "service": NAME})
        elif self.path == "/readyz":
            ready = MODE != "never-ready"
            self._reply(200 if ready else 503, {"ready": ready})
        else:
            self._reply(404, {"detail": "not found"})

    def _reply(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    if MODE == "crash":
        print(f"{NAME}: boom, cannot start", flush=True)
        sys.exit(3)
    server = ThreadingHTTPServer((os.environ["VIGIL_HTTP_HOST"], int(os.environ["VIGIL_HTTP_PORT"])), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"{NAME}: listening on {server.server_address}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
