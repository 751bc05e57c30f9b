"""SecAgg+ security properties: masked inputs look random, tampering excludes the sender."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from murmura.errors import ProtocolError
from murmura.privacy.secagg import (
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    Stage,
    run_secagg_round,
)
from murmura.privacy.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    MaskedInput,
    MaskRequest,
    ShareKeys,
    UnmaskRequest,
)
from murmura.privacy.secagg.quantize import Quantizer


def _flip(data: bytes, at: int = -1) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def _exact(updates: np.ndarray, weights: np.ndarray, clients: tuple[int, ...]) -> np.ndarray:
    q = Quantizer(len(updates), 1.0, float(weights.max()), stochastic=False)
    total = np.zeros(updates.shape[1] + 1, dtype=np.uint32)
    for u in clients:
        total += q.encode(updates[u], weights[u])
    return total


def test_masked_input_is_independent_of_the_plaintext() -> None:
    n, d = 8, 40_000
    ramp = np.linspace(-1.0, 1.0, d, dtype=np.float32)  # a plaintext with strong structure
    updates = np.stack([ramp * (u + 1) / n for u in range(n)])
    seen: list[MaskedInput] = []

    def record(msg: ClientMessage) -> ClientMessage:
        if isinstance(msg, MaskedInput):
            seen.append(msg)
        return msg

    run_secagg_round(updates, np.ones(n), threshold=3, neighbours=4, intercept=record)
    assert len(seen) == n
    for msg in seen:
        masked = np.frombuffer(msg.masked, dtype="<u4")[:d].astype(np.float64)
        plain = updates[msg.client].astype(np.float64)
        assert abs(np.corrcoef(masked, plain)[0, 1]) < 5 / np.sqrt(d)
        # Uniform over Z_2^32: each of 16 equal bins holds about d / 16 values.
        counts = np.bincount((masked // 2**28).astype(np.int64), minlength=16)
        chi2 = float(((counts - d / 16) ** 2 / (d / 16)).sum())
        assert chi2 < 45.0  # df = 15; p < 1e-4 under uniformity
    # The server's running sum of masked inputs before unmasking says nothing either.
    partial = sum(np.frombuffer(m.masked, dtype="<u4")[:d].astype(np.uint64) for m in seen[:-1])
    partial_f = np.asarray(partial % 2**32, dtype=np.float64)
    assert abs(np.corrcoef(partial_f, ramp)[0, 1]) < 5 / np.sqrt(d)


def test_tampered_ciphertext_excludes_its_sender() -> None:
    n = 12
    rng = np.random.default_rng(1)
    updates = rng.normal(size=(n, 16)).astype(np.float32)
    weights = np.arange(1.0, n + 1)

    def tamper(msg: ClientMessage) -> ClientMessage:
        if isinstance(msg, ShareKeys) and msg.client == 3:
            first = msg.shares[0]
            bad = dataclasses.replace(first, ciphertext=_flip(first.ciphertext))
            return dataclasses.replace(msg, shares=(bad, *msg.shares[1:]))
        return msg

    result = run_secagg_round(updates, weights, threshold=3, neighbours=6, intercept=tamper,
                              rounding="deterministic")
    assert set(result.excluded) == {3}
    assert "failed authentication" in result.excluded[3]
    assert result.survivors == tuple(u for u in range(n) if u != 3)
    np.testing.assert_array_equal(result.raw_sum, _exact(updates, weights, result.survivors))


def test_wrong_advertise_signature_excludes_the_sender() -> None:
    n = 10
    updates = np.random.default_rng(2).normal(size=(n, 8)).astype(np.float32)
    weights = np.ones(n)

    def forge(msg: ClientMessage) -> ClientMessage:
        if isinstance(msg, AdvertiseKeys) and msg.client == 5:
            return dataclasses.replace(msg, signature=_flip(msg.signature, 0))
        return msg

    result = run_secagg_round(updates, weights, threshold=3, neighbours=4, intercept=forge,
                              rounding="deterministic")
    assert result.excluded == {5: "invalid signature on advertised keys"}
    assert 5 not in result.survivors and len(result.survivors) == n - 1
    np.testing.assert_array_equal(result.raw_sum, _exact(updates, weights, result.survivors))


def _parties(n: int = 6, k: int = 4, t: int = 3) -> tuple[dict[int, SecAggClient], SecAggServer]:
    config = SecAggConfig(num_clients=n, dim=4, neighbours=k, threshold=t)
    keys = {u: Ed25519PrivateKey.generate() for u in range(n)}
    public = {u: key.public_key() for u, key in keys.items()}
    clients = {u: SecAggClient(config, u, keys[u], public) for u in range(n)}
    return clients, SecAggServer(config, public)


def test_client_rejects_keys_substituted_by_the_server_and_the_sender_is_excluded() -> None:
    clients, server = _parties()
    for c in clients.values():
        server.receive_advertise(c.advertise())
    server.close_advertise()
    directory = server.key_directory(0)
    victim = directory.keys[0]
    forged = dataclasses.replace(victim, mask_public=bytes(32))  # signature no longer matches
    directory = dataclasses.replace(directory, keys=(forged, *directory.keys[1:]))
    reply = clients[0].share_keys(directory)
    assert reply.rejected == (victim.client,)
    assert victim.client not in {b.receiver for b in reply.shares}
    server.receive_shares(reply)
    assert victim.client in server.excluded


def _through_masking(clients: dict[int, SecAggClient], server: SecAggServer) -> None:
    for c in clients.values():
        server.receive_advertise(c.advertise())
    server.close_advertise()
    for u, c in clients.items():
        server.receive_shares(c.share_keys(server.key_directory(u)))
    server.close_sharing()
    for u, c in clients.items():
        server.receive_receipt(c.receive_shares(server.share_delivery(u)))
    server.close_receipts()
    for u, c in clients.items():
        server.receive_masked_input(c.masked_input(server.mask_request(u), np.zeros(4), 1.0))
    server.close_inputs()


def test_client_never_reveals_both_shares_of_a_neighbour_nor_twice() -> None:
    clients, server = _parties()
    _through_masking(clients, server)
    honest = server.unmask_request(0)
    v = honest.survivors[-1] if honest.survivors[-1] != 0 else honest.survivors[0]
    both = UnmaskRequest(0, honest.survivors, (v,))
    with pytest.raises(SecAggAbort, match="inconsistent"):
        clients[0].unmask(both)
    too_few = UnmaskRequest(0, (0,), tuple(u for u in honest.survivors if u != 0))
    with pytest.raises(SecAggAbort, match="surviving"):
        clients[0].unmask(too_few)
    clients[0].unmask(honest)
    with pytest.raises(ProtocolError):
        clients[0].unmask(honest)


def test_client_refuses_to_mask_with_a_neighbour_it_holds_no_shares_of() -> None:
    clients, server = _parties(n=7, k=4)
    for c in clients.values():
        server.receive_advertise(c.advertise())
    server.close_advertise()
    for u, c in clients.items():
        server.receive_shares(c.share_keys(server.key_directory(u)))
    server.close_sharing()
    clients[0].receive_shares(server.share_delivery(0))
    stranger = next(u for u in range(1, 7) if u not in clients[0].neighbours)
    with pytest.raises(SecAggAbort):
        clients[0].masked_input(MaskRequest(0, (stranger,)), np.zeros(4), 1.0)


def test_abort_when_too_few_clients_report_masked_input() -> None:
    updates = np.zeros((6, 4), dtype=np.float32)
    with pytest.raises(SecAggAbort) as info:
        run_secagg_round(updates, np.ones(6), threshold=4, neighbours=4,
                         dropouts={Stage.MASKED_INPUT: {0, 1, 2}})
    assert info.value.stage == "masked_input"  # found before any share is requested
