"""The end-to-end digest of a Push update, named in the protocol: BLAKE3.

A Push's blob header names the algorithm of the digest its trailer carries
(``BlobHeader.digest_algorithm``), and a receiver accepts only ``UPDATE_DIGEST``: a worker of
an older release (which hashed with SHA-256 and named nothing) or one naming any other
algorithm is refused before a byte of its update is allocated, with the name it sent. BLAKE3
(O'Connor, Aumasson, Neves, Wilcox-O'Hearn 2020) is a 256-bit cryptographic hash several times
faster than SHA-256 per core, which matters because both ends hash every update byte. A
model's digest (Pull, peer gossip) stays SHA-256, in the header, with no name.
"""

from __future__ import annotations

from typing import Protocol

import blake3

from murmura.errors import ProtocolError

UPDATE_DIGEST = "blake3"
"""The algorithm of a Push trailer's digest, as its header names it."""
DIGEST_BYTES = 32


class Hasher(Protocol):
    """An incremental hash: ``hashlib``'s objects and ``blake3.blake3`` both fit."""

    def update(self, data: bytes | memoryview, /) -> object:
        """Hash ``data`` after what came before."""

    def digest(self) -> bytes:
        """The digest of everything so far."""


class UnsupportedDigest(ProtocolError):
    """A Push whose header names a digest algorithm other than ``UPDATE_DIGEST`` (or none)."""


def check_update_digest(name: str) -> str:
    """Refuse an update digest algorithm other than ours, naming the one the peer sent."""
    if name == UPDATE_DIGEST:
        return name
    if not name:
        raise UnsupportedDigest(
            f"the update names no digest algorithm (a worker of an older release, hashing with "
            f"SHA-256); this node accepts {UPDATE_DIGEST!r} only: upgrade the worker"
        )
    shown = name if len(name) <= 32 and name.isprintable() else f"{name[:32]!r}..."
    raise UnsupportedDigest(
        f"update digest algorithm {shown!r} is not supported; this node accepts "
        f"{UPDATE_DIGEST!r} only"
    )


def update_hasher() -> Hasher:
    """A fresh incremental hasher for an update (one thread: the cores already carry TLS)."""
    return blake3.blake3()


def update_digest(data: bytes | memoryview) -> bytes:
    """The update digest of ``data`` at once (a result without an update hashes its header)."""
    return blake3.blake3(data).digest()
