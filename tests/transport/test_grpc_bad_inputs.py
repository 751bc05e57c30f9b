"""Bad inputs on the wire get typed errors; the server keeps serving and the round completes.

Evidence 6 and RELIABILITY 3, 9, 10, 17: garbage bytes, a truncated chunk stream, a
wrong-length update, a NaN update, an update one byte over the size limit, a message over the
gRPC limit, a replay and a stale round. Each refusal is reported to the hub's ``events``
callback (the coordinator's audit ledger), as are models sent and updates received.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import blake3
import grpc
import numpy as np
import pytest
from cryptography import x509

from murmura.transport import codec
from murmura.transport.background import ServerThread
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.grpc_server import SERVICE, ServerOptions
from murmura.transport.hub import Hub, Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult, result_parts
from murmura.types import FitRes, Layout
from murmura.update_signing import (
    UpdateSigner,
    UpdateStatement,
    certificate_pem,
    fingerprint,
    verify_update,
)

pytestmark = pytest.mark.network

LAYOUT = Layout(("w",), ((12,),))
FAST = LinkOptions(call_timeout_s=5, pull_wait_s=0.5, max_retry_s=1.0, chunk_size=16)


def _sink(node: str, round_: int, res: DecodedResult) -> None:
    assert res.update is not None
    if not np.isfinite(res.update).all():
        raise ValueError("update has non-finite values")


def _raw_push(server: ServerThread, pki, name: str, parts: list[bytes]) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    link = CoordinatorLink(server.target, name, pki.creds(name), FAST)
    push = link.channel.stream_unary(f"/{SERVICE}/Push")
    with pytest.raises(grpc.RpcError) as err:
        push(iter(parts), timeout=5)
    link.close()
    return err.value


def _signed_by(pki, signer: str, node: str, n: int = 3) -> Callable[[bytes], bytes]:  # type: ignore[no-untyped-def]
    """Signs an update of ``node`` with ``n`` examples, with ``signer``'s TLS key."""
    key = UpdateSigner(pki.creds(signer).key)
    return lambda digest: key.sign(UpdateStatement("run-1", 1, node, "FIT", n, digest, "blake3"))


def _parts(
    name: str,
    vec: np.ndarray,
    layout: Layout = LAYOUT,
    round_: int = 1,
    sign: Callable[[bytes], bytes] | None = None,
) -> list[bytes]:
    h = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION,
        run_id="run-1",
        round=round_,
        node=name,
        kind=pb.FIT,
        num_examples=3,
    )
    blob = codec.encode_blob(vec, layout)
    return [p.SerializeToString() for p in result_parts(h, blob, 16, sign)]


def test_bad_inputs_are_refused_and_the_round_completes(server: ServerThread, pki) -> None:  # type: ignore[no-untyped-def]
    nodes = {"w1", "w2", "w3", "w4", "w5", "w6", "w7"}
    out = Outgoing(1, pb.FIT, {}, codec.encode_blob(np.zeros(12, np.float32), LAYOUT), LAYOUT)
    server.call(server.hub.open_round(out, frozenset(nodes), _sink))
    good = np.arange(12, dtype=np.float32)
    events: list[tuple[str, str, int, dict[str, object]]] = []
    server.hub.events = lambda event, node, round_, details: events.append(
        (event, node, round_, dict(details))
    )

    err = _raw_push(server, pki, "w1", [b"\xff\x00garbage"])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "Malformed" in (err.details() or "")

    cut = _parts("w2", good)
    err = _raw_push(server, pki, "w2", [*cut[:-2], cut[-1]])  # last chunk missing
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "LengthMismatch" in (
        err.details() or ""
    )

    wrong = Layout(("w",), ((11,),))
    err = _raw_push(server, pki, "w3", _parts("w3", good[:11], wrong))  # wrong-length update
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "Layout" in (err.details() or "")

    nan = good.copy()
    nan[3] = np.nan
    err = _raw_push(server, pki, "w4", _parts("w4", nan, sign=_signed_by(pki, "w4", "w4")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "non-finite" in (err.details() or "")

    over = _parts("w5", good)  # declares one byte more than the 48-byte limit
    header = pb.ResultPart.FromString(over[0])
    header.header.update.length = 49
    err = _raw_push(server, pki, "w5", [header.SerializeToString(), *over[1:]])
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    big = pb.ResultPart(chunk=pb.Chunk(offset=0, data=b"\0" * (64 * 1024 + 1))).SerializeToString()
    err = _raw_push(server, pki, "w5", [over[0], big])  # a message over the gRPC limit
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # The server still serves: valid results arrive; a replay counts once; other ids refused.
    for name in ("w6", "w7"):
        link = CoordinatorLink(server.target, name, pki.creds(name), FAST)
        assert link.register().run_id == "run-1"
        assert link.pull(0).kind == pb.FIT
        assert link.push(1, FitRes(good, 3), LAYOUT).accepted
        again = link.push(1, FitRes(good, 3), LAYOUT)
        assert again.accepted and again.duplicate
        with pytest.raises(grpc.RpcError) as e:
            link.push(1, FitRes(good + 1, 3), LAYOUT)  # a different result for the same round
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
        link.close()

    outcome = server.call(server.hub.collect(0.5))
    assert sorted(outcome.results) == ["w6", "w7"]
    assert set(outcome.failures) == {"w1", "w2", "w3", "w4", "w5"}
    assert "non-finite" in outcome.failures["w4"]
    assert "Malformed" in outcome.failures["w1"]
    assert server.hub.counters["accepted"] == 2 and server.hub.counters["duplicates"] == 2

    # The round is over: a late result is refused as stale and never counted.
    err = _raw_push(server, pki, "w6", _parts("w6", good))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert server.hub.counters["accepted"] == 2

    # Every refusal, model sent and update received was reported (the coordinator's audit).
    seen = [(event, node) for event, node, _, _ in events]
    assert [(e, n) for e, n in seen if n in {"w1", "w2", "w3", "w4", "w5"}] == [
        *[("refuse", n) for n in ("w1", "w2", "w3")],
        ("join", "w4"),  # pushed without registering: its certificate is recorded first
        ("update_rejected", "w4"),
        *[("refuse", "w5")] * 2,
    ]
    flow = ["join", "model_sent", "update_received", "update_duplicate", "refuse"]
    assert [e for e, n in seen if n == "w7"] == flow
    assert [e for e, n in seen if n == "w6"] == [*flow, "refuse"]
    by = {(e, n): d for e, n, _, d in events}
    assert by["model_sent", "w6"]["sha256"] == hashlib.sha256(bytes(48)).hexdigest()
    got = dict(by["update_received", "w7"])
    w7 = x509.load_pem_x509_certificate(pki.creds("w7").cert)
    digest = blake3.blake3(good.astype("<f4").tobytes())
    signature = bytes.fromhex(str(got.pop("signature")))  # checked by the worker's certificate
    statement = UpdateStatement("run-1", 1, "w7", "FIT", 3, digest.digest(), "blake3")
    verify_update(w7, statement, signature)
    assert got == {
        "blake3": digest.hexdigest(),
        "num_examples": 3,
        "kind": "FIT",
        "cert_sha256": fingerprint(w7),
    }
    assert by["join", "w7"] == {"cert_sha256": fingerprint(w7), "certificate": certificate_pem(w7)}
    assert by["join", "w4"]["via"] == "push" and "certificate" in by["join", "w4"]
    assert "non-finite" in str(by["update_rejected", "w4"]["reason"])
    assert events[-1][3]["code"] == "FAILED_PRECONDITION"


def test_an_error_result_over_grpc_ends_the_nodes_round_and_one_with_an_update_is_refused(
    server: ServerThread,
    pki,  # type: ignore[no-untyped-def]
) -> None:
    good = np.arange(12, dtype=np.float32)
    out = Outgoing(1, pb.FIT, {}, codec.encode_blob(np.zeros(12, np.float32), LAYOUT), LAYOUT)
    server.call(server.hub.open_round(out, frozenset({"w1", "w2"}), _sink))
    both = _parts("w2", good)  # an error that also announces an update: typed refusal
    header = pb.ResultPart.FromString(both[0])
    header.header.error = "RuntimeError: boom"
    err = _raw_push(server, pki, "w2", [header.SerializeToString(), *both[1:]])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must not announce an update" in (err.details() or "")

    link = CoordinatorLink(server.target, "w1", pki.creds("w1"), FAST)
    link.register()
    assert link.pull(0).kind == pb.FIT
    assert link.push_error(1, pb.FIT, "MemoryError: no room").accepted
    again = link.push_error(1, pb.FIT, "MemoryError: no room")
    assert again.accepted and again.duplicate
    link.close()
    link = CoordinatorLink(server.target, "w2", pki.creds("w2"), FAST)
    link.register()
    assert link.push(1, FitRes(good, 3), LAYOUT).accepted
    link.close()
    outcome = server.call(server.hub.collect(60.0), timeout=5)  # all answered: no waiting
    assert sorted(outcome.results) == ["w2"]
    assert outcome.failures == {"w1": "worker error: MemoryError: no room"}


def _flipped(sign: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def flip(digest: bytes) -> bytes:
        sig = bytearray(sign(digest))
        sig[-1] ^= 1
        return bytes(sig)

    return flip


def test_missing_forged_and_altered_update_signatures_are_refused(  # type: ignore[no-untyped-def]
    server: ServerThread, pki
) -> None:
    good = np.arange(12, dtype=np.float32)
    out = Outgoing(1, pb.FIT, {}, codec.encode_blob(np.zeros(12, np.float32), LAYOUT), LAYOUT)
    nodes = frozenset({"w1", "w2", "w3", "w4", "w5"})
    server.call(server.hub.open_round(out, nodes, _sink))
    events: list[tuple[str, str, dict[str, object]]] = []
    server.hub.events = lambda event, node, round_, d: events.append((event, node, dict(d)))
    cases = {
        "w1": (None, "carries no signature"),
        "w2": (_signed_by(pki, "w3", "w2"), "does not verify"),  # another worker's key
        "w3": (_signed_by(pki, "w3", "w3", n=4), "does not verify"),  # signed 4 examples, sent 3
        "w4": (_flipped(_signed_by(pki, "w4", "w4")), "does not verify"),
    }
    for node, (sign, why) in cases.items():
        err = _raw_push(server, pki, node, _parts(node, good, sign=sign))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, node
        assert "SignatureError" in (err.details() or "") and why in (err.details() or ""), node
    huge = _parts("w5", good, sign=lambda digest: b"\x30" * 257)
    err = _raw_push(server, pki, "w5", huge)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit 256" in (err.details() or "")

    refused = [(n, d) for e, n, d in events if e == "refuse"]
    assert [n for n, _ in refused] == ["w1", "w2", "w3", "w4", "w5"]
    assert all(d["code"] == "UNAUTHENTICATED" for n, d in refused if n != "w5")
    assert not [e for e, _, _ in events if e == "update_received"]
    for node in ("w1", "w2"):  # a refused push is no answer: the node may still send its own
        link = CoordinatorLink(server.target, node, pki.creds(node), FAST)
        link.register()
        assert link.push(1, FitRes(good, 3), LAYOUT).accepted
        link.close()
    outcome = server.call(server.hub.collect(0.5))
    assert sorted(outcome.results) == ["w1", "w2"]
    assert "SignatureError" in outcome.failures["w3"] and "last error" in outcome.failures["w3"]


def test_unsigned_updates_pass_only_when_not_required(pki) -> None:  # type: ignore[no-untyped-def]
    opts = ServerOptions(
        credentials=pki.creds("coordinator"), require_signed_updates=False, chunk_size=16
    )
    events: list[tuple[str, str, dict[str, object]]] = []
    hub = Hub("run-1", events=lambda event, node, round_, d: events.append((event, node, dict(d))))
    with ServerThread(hub, opts) as st:
        good = np.arange(12, dtype=np.float32)
        out = Outgoing(1, pb.FIT, {}, codec.encode_blob(np.zeros(12, np.float32), LAYOUT), LAYOUT)
        st.call(hub.open_round(out, frozenset({"w1", "w2"}), _sink))
        link = CoordinatorLink(st.target, "w1", pki.creds("w1"), FAST)
        raw = link.channel.stream_unary(f"/{SERVICE}/Push")
        reply = pb.PushReply.FromString(raw(iter(_parts("w1", good)), timeout=5))
        assert reply.accepted  # unsigned, and accepted: not required here
        link.close()
        err = _raw_push(st, pki, "w2", _parts("w2", good, sign=_signed_by(pki, "w1", "w2")))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED  # a bad signature never passes
    (received,) = [d for e, n, d in events if e == "update_received"]
    assert "signature" not in received and "cert_sha256" not in received
