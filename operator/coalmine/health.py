"""``/healthz`` and ``/readyz``: what kubelet asks the operator's pod.

Liveness is the process working at all (its informer and worker threads alive). Readiness is the
operator able to do its work: caches synced and fresh, and not every recent reconcile refused by
the API server (a broken RBAC install shows as a pod that never gets Ready, not as a quiet one).
Both answer with a line of text saying why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("coalmine.health")

Probe = Callable[[], tuple[bool, str]]


def serve(address: str, port: int, *, live: Probe, ready: Probe) -> ThreadingHTTPServer:
    """Start the probe server in a thread of its own; returns it (``shutdown()`` stops it)."""
    probes = {"/healthz": live, "/readyz": ready}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            probe = probes.get(self.path.split("?", 1)[0])
            if probe is None:
                self.send_error(404)
                return
            ok, why = probe()
            body = f"{'ok' if ok else 'failing'}: {why}\n".encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # kubelet asks every few seconds: not worth a log line

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info("serving /healthz and /readyz on %s:%d", address, port)
    return server
