"""Shamir t-of-m sharing of 16-byte secrets: a thin wrapper over pycryptodome.

pycryptodome's ``Shamir`` shares 16-byte secrets over GF(2^128). SecAgg needs to share two
secrets per client, the self-mask seed and the mask private key; we make both 16-byte seeds
(the X25519 key is *derived* from its seed with HKDF, see ``crypto.mask_key_from_seed``), so
each is exactly one Shamir instance, the server rebuilds each with one interpolation, and
128-bit seeds match the ~128-bit security level of X25519 and AES-128. Nothing here
implements field arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping

from Crypto.Protocol.SecretSharing import Shamir

SECRET_BYTES = 16
SHARE_BYTES = 16


def split(secret: bytes, threshold: int, num_shares: int) -> dict[int, bytes]:
    """Share a 16-byte secret as shares 1..num_shares, any ``threshold`` of which rebuild it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= num_shares:
        raise ValueError(f"need 1 <= threshold <= num_shares, got {threshold}, {num_shares}")
    if threshold == 1:
        # A degree-0 polynomial is the secret itself; pycryptodome requires k >= 2.
        return dict.fromkeys(range(1, num_shares + 1), secret)
    return {int(i): bytes(s) for i, s in Shamir.split(threshold, num_shares, secret, ssss=False)}


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Rebuild a 16-byte secret from at least ``threshold`` shares ``{index: share}``."""
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(shares)}")
    if any(len(s) != SHARE_BYTES for s in shares.values()):
        raise ValueError(f"every share must be {SHARE_BYTES} bytes")
    items = sorted(shares.items())[:threshold]
    if threshold == 1:
        return items[0][1]
    return bytes(Shamir.combine(items, ssss=False))
