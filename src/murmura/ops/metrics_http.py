"""The HTTP endpoint that serves a metrics registry at ``/metrics`` for Prometheus to scrape.

Plain HTTP without authentication, from a daemon thread (standard library ``http.server``),
so a scrape never waits on the coordinator's event loop. It listens on loopback unless the
operator asks for another address and says so with ``allow_remote``: the figures (round,
workers, refusals, accuracy) describe the deployment to whoever can reach the port.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from murmura.errors import ConfigError
from murmura.transport.grpc_server import is_loopback

log = logging.getLogger(__name__)

PATH = "/metrics"
POLL_S = 0.1
"""How often the serving thread checks for ``close`` (its longest wait)."""


@dataclass(frozen=True, slots=True)
class MetricsEndpoint:
    """Where to serve ``/metrics``; refuses a non-loopback host unless ``allow_remote``."""

    host: str = "127.0.0.1"
    port: int = 0
    """0: a free port chosen at start (``MetricsServer.port`` says which)."""
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"metrics port must be in 0..65535, got {self.port}")
        if not self.allow_remote and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve metrics on {self.host!r}: /metrics is plain HTTP without "
                "authentication; use a loopback host (and a scraper on this machine or a "
                "tunnel), or set [server] metrics_allow_remote = true to expose it"
            )


class MetricsServer:
    """A running endpoint; ``close`` stops it and frees the port."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd, self._thread = httpd, thread
        self.host, self.port = str(httpd.server_address[0]), int(httpd.server_address[1])

    @property
    def url(self) -> str:
        """The scrape URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PATH}"

    def close(self) -> None:
        """Stop serving and free the port (waits for the serving thread's next poll)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)


def serve_metrics(render: Callable[[], bytes], endpoint: MetricsEndpoint) -> MetricsServer:
    """Serve ``render()`` at ``/metrics`` on ``endpoint`` from a daemon thread."""
    handler = type("MetricsHandler", (_Handler,), {"render": staticmethod(render)})
    server_cls = _IPv6Server if ":" in endpoint.host else ThreadingHTTPServer
    try:
        httpd = server_cls((endpoint.host.strip("[]"), endpoint.port), handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {endpoint.host}:{endpoint.port}: {exc}"
        ) from None
    thread = threading.Thread(
        target=httpd.serve_forever, args=(POLL_S,), name="murmura-metrics", daemon=True
    )
    thread.start()
    server = MetricsServer(httpd, thread)
    if not is_loopback(endpoint.host):
        log.warning("metrics served on %s, reachable from other machines", server.url)
    else:
        log.info("metrics served on %s", server.url)
    return server


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics; anything else is 404 (or 405 for another method)."""

    render: Callable[[], bytes]
    timeout = 10.0  # a client that stalls mid-request loses its thread after this long
    server_version = "murmura-metrics"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        """Serve the exposition, or 404 for any other path."""
        if self.path.split("?", 1)[0] != PATH:
            self._reply(404, b"not found: scrape /metrics\n", "text/plain; charset=utf-8")
            return
        try:
            body = self.render()
        except Exception:  # a scrape must not kill the serving thread; the log says why
            log.exception("metrics: rendering failed")
            self._reply(500, b"rendering the metrics failed\n", "text/plain; charset=utf-8")
            return
        self._reply(200, body, CONTENT_TYPE_PLAIN_0_0_4)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        if status == 405:
            self.send_header("Allow", "GET")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _not_allowed(self) -> None:
        self._reply(405, b"use GET\n", "text/plain; charset=utf-8")

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        """Send request lines to ``logging`` at debug level, not to stderr."""
        log.debug("metrics: %s %s", self.address_string(), format % args)
