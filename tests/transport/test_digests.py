"""The Push digest is BLAKE3, named in its header; an older or foreign one is refused by name."""

from __future__ import annotations

import hashlib

import blake3
import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.errors import ProtocolError
from murmura.transport import codec, streams
from murmura.transport.background import ServerThread
from murmura.transport.codec import MalformedMessage
from murmura.transport.digests import UPDATE_DIGEST, UnsupportedDigest
from murmura.transport.frames import varint
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.grpc_server import SERVICE
from murmura.transport.hub import Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.types import Layout

LAYOUT = Layout(("w",), ((12,),))
VEC = np.arange(12, dtype=np.float32)


def _header(algorithm: str | None) -> pb.ResultHeader:
    h = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="run-1", round=1, node="w1", kind=pb.FIT,
        num_examples=3,
    )  # fmt: skip
    h.update.CopyFrom(codec.encode_blob(VEC, LAYOUT, digest=False).header)
    if algorithm is not None:
        h.update.digest_algorithm = algorithm
    return h


def _old_push() -> list[bytes]:
    """A Push as a worker of the previous release sent it: no algorithm, SHA-256 in field 1."""
    data = VEC.astype("<f4").tobytes()
    trailer = b"\x0a\x20" + hashlib.sha256(data).digest()  # BlobTrailer.sha256 = 1
    return [
        pb.ResultPart(header=_header(None)).SerializeToString(),
        pb.ResultPart(chunk=pb.Chunk(offset=0, data=data)).SerializeToString(),
        b"\x1a" + varint(len(trailer)) + trailer,  # ResultPart.trailer = 3
    ]


def test_the_push_names_blake3_and_its_trailer_carries_it() -> None:
    parts = [p.SerializeToString() for p in streams.result_parts(_header(None), _blob())]
    head = pb.ResultPart.FromString(parts[0]).header.update
    assert head.digest_algorithm == UPDATE_DIGEST == "blake3" and head.sha256 == b""
    digest = blake3.blake3(VEC.astype("<f4").tobytes()).digest()
    assert pb.ResultPart.FromString(parts[-1]).trailer.digest == digest
    assert streams.decode_result(parts, expected=LAYOUT).digest == digest


def _blob() -> codec.Blob:
    return codec.encode_blob(VEC, LAYOUT, digest=False)


def test_an_older_workers_push_is_refused_at_its_header_naming_why() -> None:
    reader = streams.ResultReader(expected=LAYOUT)
    with pytest.raises(UnsupportedDigest, match="names no digest algorithm.*older release"):
        reader.read_header(_old_push()[0])  # before any buffer is allocated
    with pytest.raises(UnsupportedDigest, match="'blake3' only"):
        streams.decode_result(_old_push(), expected=LAYOUT)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80).filter(lambda s: s not in ("", UPDATE_DIGEST)))
def test_any_other_algorithm_is_refused_by_name_on_one_line(name: str) -> None:
    parts = [pb.ResultPart(header=_header(name)).SerializeToString()]
    with pytest.raises(UnsupportedDigest) as err:
        streams.decode_result(parts, expected=LAYOUT)
    text = str(err.value)
    assert "\n" not in text and "'blake3' only" in text
    if name.isprintable() and len(name) <= 32:
        assert repr(name) in text


_GOOD_TRAILER = pb.BlobTrailer(digest=blake3.blake3(VEC.tobytes()).digest()).SerializeToString()


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.sampled_from([b"blake3", b"sha256", b"", b"BLAKE3"]), st.binary(max_size=40)),
    st.one_of(st.just(_GOOD_TRAILER), st.binary(max_size=40)),
)
def test_a_fuzzed_algorithm_or_trailer_raises_only_protocol_errors(alg: bytes, tail: bytes) -> None:
    header = _header(None).SerializeToString()
    # BlobHeader.digest_algorithm (field 5) of arbitrary bytes, UTF-8 or not, inside field 9
    update = pb.ResultHeader.FromString(header).update.SerializeToString()
    update += b"\x2a" + varint(len(alg)) + alg
    h = pb.ResultHeader.FromString(header)
    h.ClearField("update")
    raw_header = h.SerializeToString() + b"\x4a" + varint(len(update)) + update
    first = b"\x0a" + varint(len(raw_header)) + raw_header
    trailer = b"\x1a" + varint(len(tail)) + tail
    data = pb.ResultPart(chunk=pb.Chunk(data=VEC.tobytes())).SerializeToString()
    try:
        res = streams.decode_result([first, data, trailer], expected=LAYOUT)
    except ProtocolError:
        return
    assert (alg, tail) == (b"blake3", _GOOD_TRAILER)  # only the exact name and digest pass
    assert res.update is not None and res.update.tobytes() == VEC.tobytes()


def test_a_models_header_names_no_algorithm() -> None:
    blob = codec.encode_blob(VEC, LAYOUT)
    blob.header.digest_algorithm = "blake3"
    h = pb.InstructionHeader(version=codec.PROTOCOL_VERSION, run_id="r", kind=pb.FIT)
    parts = [p.SerializeToString() for p in streams.instruction_parts(h, blob)]
    with pytest.raises(MalformedMessage, match="names no digest algorithm"):
        streams.decode_instruction(parts)


@pytest.mark.network
def test_the_coordinator_refuses_an_older_worker_over_grpc(server: ServerThread, pki) -> None:  # type: ignore[no-untyped-def]
    out = Outgoing(1, pb.FIT, {}, codec.encode_blob(np.zeros(12, np.float32), LAYOUT), LAYOUT)
    server.call(server.hub.open_round(out, frozenset({"w1"}), lambda *_: None))
    link = CoordinatorLink(server.target, "w1", pki.creds("w1"), LinkOptions(call_timeout_s=5))
    push = link.channel.stream_unary(f"/{SERVICE}/Push")
    with pytest.raises(grpc.RpcError) as err:
        push(iter(_old_push()), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UnsupportedDigest" in (err.value.details() or "")
    assert "older release" in (err.value.details() or "")
    link.close()
    outcome = server.call(server.hub.collect(0.2))
    assert outcome.results == {} and "UnsupportedDigest" in outcome.failures["w1"]
