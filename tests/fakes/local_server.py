"""The life cycle the fake REST servers share: an HTTP server on a free 127.0.0.1 port,
served from a daemon thread while the ``with`` block lasts."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class LocalServer:
    server: ThreadingHTTPServer
    url: str

    def _listen(self, handler: type) -> None:
        """Bind ``handler`` (a request handler class) to a free port; sets ``url``."""
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        # A short poll interval: shutdown() waits for it, once per test.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
