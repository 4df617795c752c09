"""The real Flask app served over HTTP from a background thread, on a free port."""

from __future__ import annotations

import threading

from werkzeug.serving import make_server

from app import background


class LiveServer:
    """Serves one WSGI app on 127.0.0.1 until stopped."""

    def __init__(self, app):
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        background.stop(self.app)  # its compaction loop, if it runs one, ends with it
