"""Keepalive on real processes over loopback with mTLS (RELIABILITY 6).

A process frozen with SIGSTOP still has its TCP stack ACK every segment, but it can no longer
answer HTTP/2 PINGs: a dead link as far as the application can tell, which only keepalive can
notice. Both sides must notice within keepalive time + keepalive timeout (plus a margin for a
loaded machine). A peer that pings far too often is told to go away (GOAWAY
ENHANCE_YOUR_CALM "too_many_pings"), and the server goes on serving everyone else.

Run as a script, this file is the other process: ``worker`` (registers, then waits in a
long-poll Pull) or ``coordinator`` (serves a hub until killed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from murmura.transport import codec, keys
from murmura.transport.background import ServerThread
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.grpc_server import SERVICE, ServerOptions
from murmura.transport.hub import Hub
from murmura.transport.proto import murmura_pb2 as pb

pytestmark = [pytest.mark.slow, pytest.mark.network]

KEEPALIVE_S, KEEPALIVE_TIMEOUT_S = 1.0, 1.0
WINDOW_S = KEEPALIVE_S + KEEPALIVE_TIMEOUT_S
MARGIN_S = 1.5  # scheduling slack on a loaded 2-core machine
HEALTHY_S = 2.5  # a live link must survive more than one keepalive round trip

SERVER_OPTS = ServerOptions(
    max_wait_s=60.0,  # a Pull stays open (and quiet) for the whole test
    keepalive_s=KEEPALIVE_S,
    keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
    min_ping_interval_s=0.5,  # below the worker's 1 s keepalive: its pings are welcome
)
LINK_OPTS = LinkOptions(
    call_timeout_s=5.0,
    pull_wait_s=60.0,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    max_retry_s=30.0,
    keepalive_s=KEEPALIVE_S,
    keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
)


# -- the other process ------------------------------------------------------------------
def _creds(pki: Path, name: str) -> keys.Credentials:
    f = keys.node_files(pki, name)
    return keys.Credentials.load(f.cert, f.key, f.ca)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=("worker", "coordinator"))
    ap.add_argument("--pki", type=Path, required=True)
    ap.add_argument("--target", default="")
    a = ap.parse_args()
    if a.role == "worker":
        link = CoordinatorLink(a.target, "w1", _creds(a.pki, "w1"), LINK_OPTS, seed=0)
        link.register()
        print("REGISTERED", flush=True)
        link.pull(0)  # waits here until killed
        return
    hub = Hub("run-ka", heartbeat_s=0.5, lost_after_s=30.0)
    with ServerThread(hub, _server_opts(a.pki)) as st:
        print(f"PORT {st.port}", flush=True)
        while True:
            time.sleep(3600)


# -- helpers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ka-pki")
    keys.init_ca(root)
    keys.issue(root, "coordinator", "coordinator")
    for name in ("w1", "w2", "pinger"):
        keys.issue(root, name, "worker")
    return root


class Proc:
    """A child process of this file; frozen, thawed and killed by pid, its output in a file."""

    def __init__(self, out: Path, *args: str) -> None:
        self.out = out
        with out.open("wb") as f:
            self.p = subprocess.Popen(
                [sys.executable, __file__, *args], stdout=f, stderr=subprocess.STDOUT
            )

    def wait_for(self, marker: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out.read_text().splitlines():
                if line.startswith(marker):
                    return line
            assert self.p.poll() is None, self.out.read_text()
            time.sleep(0.02)
        raise AssertionError(f"no {marker!r} in time:\n{self.out.read_text()}")

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.p.pid, sig)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()  # SIGKILL also ends a stopped process
        self.p.wait(10)


def _until(pred: Callable[[], bool], timeout: float) -> float | None:
    """Poll ``pred`` (a callable) until true; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(0.01)
    return None


def _server_opts(pki: Path) -> ServerOptions:
    return ServerOptions(
        credentials=_creds(pki, "coordinator"),
        max_wait_s=SERVER_OPTS.max_wait_s,
        keepalive_s=SERVER_OPTS.keepalive_s,
        keepalive_timeout_s=SERVER_OPTS.keepalive_timeout_s,
        min_ping_interval_s=SERVER_OPTS.min_ping_interval_s,
    )


@pytest.fixture
def server(pki_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(
        Hub("run-ka", heartbeat_s=0.5, lost_after_s=30.0), _server_opts(pki_dir)
    ) as st:
        yield st


# -- tests --------------------------------------------------------------------------------
def test_server_notices_a_frozen_worker_within_the_keepalive_window(
    server: ServerThread, pki_dir: Path, tmp_path: Path
) -> None:
    hub = server.hub
    worker = Proc(
        tmp_path / "worker.log", "worker", "--pki", str(pki_dir), "--target", server.target
    )
    try:
        worker.wait_for("REGISTERED")
        time.sleep(HEALTHY_S)  # its Pull arrives and waits, quiet, on the server
        assert "w1" not in hub.links_down, "a live link was cut by keepalive"

        worker.signal(signal.SIGSTOP)
        frozen = time.monotonic()
        noticed = _until(lambda: "w1" in hub.links_down, WINDOW_S + MARGIN_S + 5.0)
        assert noticed is not None, "the frozen worker's link was never noticed"
        took = hub.links_down["w1"] - frozen
        print(f"\nserver noticed the frozen worker after {took:.2f} s (window {WINDOW_S:g} s)")
        assert took <= WINDOW_S + MARGIN_S
        assert hub.counters["links_down"] == 1
        assert "w1" in hub.alive()  # noticed, not yet declared lost: that stays heartbeat-based
    finally:
        worker.signal(signal.SIGCONT)
        worker.kill()


class _Times(logging.Handler):
    """Monotonic times of the link's 'coordinator at ... not reachable; retrying' records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "not reachable; retrying" in record.getMessage():
            self.times.append(time.monotonic())


def test_worker_notices_a_frozen_coordinator_and_reconnects(pki_dir: Path, tmp_path: Path) -> None:
    coord = Proc(tmp_path / "coordinator.log", "coordinator", "--pki", str(pki_dir))
    times = _Times()
    logger = logging.getLogger("murmura.transport.grpc_client")
    logger.addHandler(times)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    link: CoordinatorLink | None = None
    pulling = threading.Thread()
    try:
        port = int(coord.wait_for("PORT").split()[1])
        link = CoordinatorLink(f"127.0.0.1:{port}", "w2", _creds(pki_dir, "w2"), LINK_OPTS, seed=0)
        link.register()
        errors: list[Exception] = []

        def pull() -> None:
            assert link is not None
            try:
                link.pull(0)
            except (grpc.RpcError, ValueError) as exc:  # the test closes the link under it
                errors.append(exc)

        pulling = threading.Thread(target=pull, daemon=True)
        pulling.start()
        time.sleep(HEALTHY_S)
        assert not times.times, "a live link was cut by keepalive"
        assert pulling.is_alive() and not errors

        coord.signal(signal.SIGSTOP)
        frozen = time.monotonic()
        noticed = _until(lambda: bool(times.times), WINDOW_S + MARGIN_S + 5.0)
        assert noticed is not None, f"worker never noticed: {errors} {pulling.is_alive()}"
        took = times.times[0] - frozen
        print(f"\nworker noticed the frozen coordinator after {took:.2f} s (window {WINDOW_S:g} s)")
        assert took <= WINDOW_S + MARGIN_S

        coord.signal(signal.SIGCONT)  # the coordinator is back: the same link reconnects
        reply = link.retrying("heartbeat", lambda: link.heartbeat(0) if link else None)
        assert reply is not None and not reply.shutdown
    finally:
        logger.removeHandler(times)
        logger.setLevel(old_level)
        if link is not None:
            link.close()
        if pulling.ident is not None:
            pulling.join(10)
        if coord.p.poll() is None:
            coord.signal(signal.SIGCONT)
        coord.kill()


def test_a_peer_that_pings_too_often_is_told_to_go_away(pki_dir: Path) -> None:
    # default ping policy: pings less than 5 s apart without data are strikes, 2 are forgiven
    opts = ServerOptions(credentials=_creds(pki_dir, "coordinator"), max_wait_s=60.0)
    with ServerThread(Hub("run-ka", heartbeat_s=0.5, lost_after_s=30.0), opts) as server:
        _ping_abuse(server, pki_dir)


def _ping_abuse(server: ServerThread, pki_dir: Path) -> None:
    good = CoordinatorLink(server.target, "w1", _creds(pki_dir, "w1"), LinkOptions(), seed=0)
    good.register()
    assert good.heartbeat(0).round == 0
    # gRPC's client core sends at most about one ping a second whatever keepalive_time_ms
    # says; against the 5 s minimum each one is a strike, and the third one gets GOAWAY
    c = _creds(pki_dir, "pinger")
    abusive = grpc.secure_channel(
        server.target,
        grpc.ssl_channel_credentials(c.ca, c.key, c.cert),
        [
            ("grpc.keepalive_time_ms", 10),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    try:
        pull = abusive.unary_stream(f"/{SERVICE}/Pull")
        req = pb.PullRequest(
            version=codec.PROTOCOL_VERSION, node="pinger", wait_ms=10_000
        ).SerializeToString()
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            list(pull(req, timeout=10.0))
        took = time.monotonic() - t0
        print(f"\nabusive pinger cut after {took:.2f} s: {err.value.details()}")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "too many pings" in (err.value.details() or "").lower()
        assert took < 8.0
        # the server stays up: the well-behaved worker goes on being served
        assert good.heartbeat(0).round == 0
        assert server.hub.counters["links_down"] == 1  # the pinger's pull, cut by the GOAWAY
    finally:
        abusive.close()
        good.close()


if __name__ == "__main__":
    main()
