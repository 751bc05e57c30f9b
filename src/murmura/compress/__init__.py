"""Compression of updates and models: codecs, their registry, error feedback and framing.

``make_codec("topk", ratio=0.01)`` builds a codec; ``ErrorFeedback`` adds the sender's
residual; ``frame`` / ``unframe`` name the codec in the bytes on the wire.
"""

from __future__ import annotations

from typing import Any

from murmura.compress.base import Codec, spec
from murmura.compress.feedback import ErrorFeedback
from murmura.compress.frame import frame, framed_size, unframe
from murmura.errors import ConfigError
from murmura.registry import Registry

CODECS: Registry[type[Any]] = Registry("codec")
CODECS.register_lazy("float16", "murmura.compress.floats:Float16", "IEEE half precision")
CODECS.register_lazy("bfloat16", "murmura.compress.floats:BFloat16", "bfloat16 (8-bit mantissa)")
CODECS.register_lazy(
    "quantize", "murmura.compress.quantize:StochasticQuantizer", "unbiased k-bit quantisation"
)
CODECS.register_lazy("qsgd", "murmura.compress.quantize:QSGD", "QSGD with s levels")
CODECS.register_lazy("topk", "murmura.compress.sparse:TopK", "top-k sparsification")
CODECS.register_lazy(
    "topkq", "murmura.compress.sparse:TopKQuantized", "top-k, packed indices, quantised values"
)
CODECS.register_lazy("randk", "murmura.compress.sparse:RandomK", "random-k sparsification")
CODECS.register_lazy("sign", "murmura.compress.sign:Sign", "scaled sign (EF-signSGD)")


def make_codec(name: str, **params: Any) -> Codec:
    """The codec ``name`` with ``params``; bad names or values give a one-line error."""
    cls = CODECS.get(name)
    try:
        codec: Codec = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"codec {name!r}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return codec


__all__ = [
    "CODECS",
    "Codec",
    "ErrorFeedback",
    "frame",
    "framed_size",
    "make_codec",
    "spec",
    "unframe",
]
