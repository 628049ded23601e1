"""The serving half of the tests' HTTP stand-ins (ntfy, heartbeat services)."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve(handler: type[BaseHTTPRequestHandler],
          tls: tuple[Path, Path] | None = None) -> tuple[ThreadingHTTPServer, str]:
    """``handler`` on a free loopback port, in a daemon thread; HTTPS with ``tls`` (chain, key).

    Returns the server (``shutdown()`` and ``server_close()`` stop it) and its base URL.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"
