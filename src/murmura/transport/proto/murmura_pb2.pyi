from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    FIT: _ClassVar[Kind]
    EVALUATE: _ClassVar[Kind]
    WAIT: _ClassVar[Kind]
    SHUTDOWN: _ClassVar[Kind]
    STATS: _ClassVar[Kind]
KIND_UNSPECIFIED: Kind
FIT: Kind
EVALUATE: Kind
WAIT: Kind
SHUTDOWN: Kind
STATS: Kind

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class BlobHeader(_message.Message):
    __slots__ = ("dtype", "length", "sha256", "layout", "digest_algorithm")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    length: int
    sha256: bytes
    layout: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    digest_algorithm: str
    def __init__(self, dtype: _Optional[str] = ..., length: _Optional[int] = ..., sha256: _Optional[bytes] = ..., layout: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., digest_algorithm: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class BlobTrailer(_message.Message):
    __slots__ = ("signature", "digest")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    digest: bytes
    def __init__(self, signature: _Optional[bytes] = ..., digest: _Optional[bytes] = ...) -> None: ...

class ConfigValue(_message.Message):
    __slots__ = ("b", "i", "f", "s")
    B_FIELD_NUMBER: _ClassVar[int]
    I_FIELD_NUMBER: _ClassVar[int]
    F_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    b: bool
    i: int
    f: float
    s: str
    def __init__(self, b: _Optional[bool] = ..., i: _Optional[int] = ..., f: _Optional[float] = ..., s: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("version", "node")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    version: int
    node: str
    def __init__(self, version: _Optional[int] = ..., node: _Optional[str] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("version", "run_id", "node", "round", "heartbeat_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    node: str
    round: int
    heartbeat_ms: int
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., node: _Optional[str] = ..., round: _Optional[int] = ..., heartbeat_ms: _Optional[int] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("version", "run_id", "node", "after_round", "wait_ms", "held_sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    AFTER_ROUND_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    HELD_SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    node: str
    after_round: int
    wait_ms: int
    held_sha256: bytes
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., node: _Optional[str] = ..., after_round: _Optional[int] = ..., wait_ms: _Optional[int] = ..., held_sha256: _Optional[bytes] = ...) -> None: ...

class InstructionHeader(_message.Message):
    __slots__ = ("version", "run_id", "round", "node", "kind", "config", "weights", "base_sha256")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ConfigValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ConfigValue, _Mapping]] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BASE_SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    round: int
    node: str
    kind: Kind
    config: _containers.MessageMap[str, ConfigValue]
    weights: BlobHeader
    base_sha256: bytes
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., node: _Optional[str] = ..., kind: _Optional[_Union[Kind, str]] = ..., config: _Optional[_Mapping[str, ConfigValue]] = ..., weights: _Optional[_Union[BlobHeader, _Mapping]] = ..., base_sha256: _Optional[bytes] = ...) -> None: ...

class Instruction(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: InstructionHeader
    chunk: Chunk
    def __init__(self, header: _Optional[_Union[InstructionHeader, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class ResultHeader(_message.Message):
    __slots__ = ("version", "run_id", "round", "node", "kind", "num_examples", "metrics", "loss", "update", "error", "stats")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    round: int
    node: str
    kind: Kind
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    loss: float
    update: BlobHeader
    error: str
    stats: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., node: _Optional[str] = ..., kind: _Optional[_Union[Kind, str]] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., loss: _Optional[float] = ..., update: _Optional[_Union[BlobHeader, _Mapping]] = ..., error: _Optional[str] = ..., stats: _Optional[_Iterable[float]] = ...) -> None: ...

class ResultPart(_message.Message):
    __slots__ = ("header", "chunk", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: ResultHeader
    chunk: Chunk
    trailer: BlobTrailer
    def __init__(self, header: _Optional[_Union[ResultHeader, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., trailer: _Optional[_Union[BlobTrailer, _Mapping]] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("version", "accepted", "duplicate", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    accepted: bool
    duplicate: bool
    reason: str
    def __init__(self, version: _Optional[int] = ..., accepted: _Optional[bool] = ..., duplicate: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("version", "run_id", "node", "round")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    node: str
    round: int
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., node: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("version", "round", "shutdown")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    version: int
    round: int
    shutdown: bool
    def __init__(self, version: _Optional[int] = ..., round: _Optional[int] = ..., shutdown: _Optional[bool] = ...) -> None: ...
