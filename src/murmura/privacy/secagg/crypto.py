"""The cryptographic building blocks of SecAgg, all from the ``cryptography`` package.

- X25519 key agreement followed by HKDF-SHA256 yields the pairwise encryption keys (from the
  ``c`` key pairs) and the pairwise mask seeds (from the ``s`` key pairs), as in
  Bonawitz et al. 2017, section 4. The HKDF ``info`` binds the purpose, the round and the
  unordered pair, so no derived key is ever reused across purposes or rounds.
- AES-256-GCM encrypts share bundles; the associated data binds (round, sender, receiver).
- Ed25519 signs the advertised public keys with each client's long-term identity key.
- AES-CTR over zero bytes is the PRG that expands a seed (a 16-byte self-mask seed, or a
  32-byte pairwise seed) into d uint32 mask words; every seed is a fresh key used for one
  stream, so a fixed all-zero nonce never repeats under one key.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

KEY_BYTES = 32
NONCE_BYTES = 12
_RAW = serialization.Encoding.Raw
_ZERO_NONCE = bytes(16)


def public_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    """Return the raw 32-byte public key of a private key."""
    return key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def mask_key_from_seed(seed: bytes, binding: bytes) -> X25519PrivateKey:
    """Derive a client's mask private key s^SK from its 16-byte seed (HKDF-SHA256).

    Sharing the seed instead of the key lets one Shamir instance cover it; the server, once it
    rebuilds the seed of a dropped client, derives the same key and checks it against the
    advertised public key.
    """
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=b"murmura-secagg mask-key|" + binding)  # fmt: skip
    return X25519PrivateKey.from_private_bytes(hkdf.derive(seed))


def pair_id(u: int, v: int) -> bytes:
    """Encode an unordered pair of client ids, the same seen from either side."""
    a, b = min(u, v), max(u, v)
    return a.to_bytes(4, "little") + b.to_bytes(4, "little")


def agree(own: X25519PrivateKey, peer_public: bytes, purpose: bytes, binding: bytes) -> bytes:
    """Derive the 32-byte key both parties of a pair get from X25519 + HKDF-SHA256."""
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose + binding)
    return hkdf.derive(shared)


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM with a random nonce; returns nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, blob: bytes, associated: bytes) -> bytes | None:
    """Inverse of :func:`encrypt`; ``None`` when the ciphertext or its binding was tampered with."""
    if len(blob) < NONCE_BYTES + 16:
        return None
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
    except InvalidTag:
        return None


def sign(identity: Ed25519PrivateKey, message: bytes) -> bytes:
    """Ed25519 signature of ``message``."""
    return identity.sign(message)


def verify(identity_public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message``."""
    try:
        identity_public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def prg(seed: bytes, length: int, word_bytes: int = 4) -> NDArray[np.unsignedinteger]:
    """Expand a 16- or 32-byte seed into ``length`` pseudorandom words (AES-CTR).

    ``word_bytes`` 4 gives uint32 words (masks mod 2^32), 2 gives uint16 (mod 2^16).
    """
    if len(seed) not in (16, KEY_BYTES):
        raise ValueError(f"PRG seed must be 16 or {KEY_BYTES} bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
    stream = encryptor.update(bytes(word_bytes * length))
    encryptor.finalize()  # CTR keeps no tail; finalising only releases the context
    return np.frombuffer(stream, dtype=f"<u{word_bytes}")
