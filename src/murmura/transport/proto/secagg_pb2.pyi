from murmura.transport.proto import murmura_pb2 as _murmura_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SecAggStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECAGG_STEP_UNSPECIFIED: _ClassVar[SecAggStep]
    SECAGG_ADVERTISE: _ClassVar[SecAggStep]
    SECAGG_SHARE: _ClassVar[SecAggStep]
    SECAGG_RECEIPT: _ClassVar[SecAggStep]
    SECAGG_MASKED_INPUT: _ClassVar[SecAggStep]
    SECAGG_UNMASK: _ClassVar[SecAggStep]

class SecAggStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECAGG_STATUS_UNSPECIFIED: _ClassVar[SecAggStatus]
    SECAGG_READY: _ClassVar[SecAggStatus]
    SECAGG_WAIT: _ClassVar[SecAggStatus]
    SECAGG_LEFT: _ClassVar[SecAggStatus]
    SECAGG_ENDED: _ClassVar[SecAggStatus]
SECAGG_STEP_UNSPECIFIED: SecAggStep
SECAGG_ADVERTISE: SecAggStep
SECAGG_SHARE: SecAggStep
SECAGG_RECEIPT: SecAggStep
SECAGG_MASKED_INPUT: SecAggStep
SECAGG_UNMASK: SecAggStep
SECAGG_STATUS_UNSPECIFIED: SecAggStatus
SECAGG_READY: SecAggStatus
SECAGG_WAIT: SecAggStatus
SECAGG_LEFT: SecAggStatus
SECAGG_ENDED: SecAggStatus

class SecAggFetchRequest(_message.Message):
    __slots__ = ("version", "run_id", "round", "node", "step", "wait_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    round: int
    node: str
    step: SecAggStep
    wait_ms: int
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., node: _Optional[str] = ..., step: _Optional[_Union[SecAggStep, str]] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class SecAggFetchReply(_message.Message):
    __slots__ = ("version", "run_id", "round", "node", "step", "status", "payload", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    round: int
    node: str
    step: SecAggStep
    status: SecAggStatus
    payload: bytes
    reason: str
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., node: _Optional[str] = ..., step: _Optional[_Union[SecAggStep, str]] = ..., status: _Optional[_Union[SecAggStatus, str]] = ..., payload: _Optional[bytes] = ..., reason: _Optional[str] = ...) -> None: ...

class SecAggSendRequest(_message.Message):
    __slots__ = ("version", "run_id", "round", "node", "step", "payload")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    round: int
    node: str
    step: SecAggStep
    payload: bytes
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., node: _Optional[str] = ..., step: _Optional[_Union[SecAggStep, str]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class SecAggSendReply(_message.Message):
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

class SecAggSetup(_message.Message):
    __slots__ = ("num_clients", "dim", "neighbours", "threshold", "clip", "max_weight", "graph_seed", "rounding", "cohort", "index", "dp_clip_norm", "dp_weight_cap", "level_bits")
    NUM_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SEED_FIELD_NUMBER: _ClassVar[int]
    ROUNDING_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DP_CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    DP_WEIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    LEVEL_BITS_FIELD_NUMBER: _ClassVar[int]
    num_clients: int
    dim: int
    neighbours: int
    threshold: int
    clip: float
    max_weight: float
    graph_seed: int
    rounding: str
    cohort: _containers.RepeatedScalarFieldContainer[str]
    index: int
    dp_clip_norm: float
    dp_weight_cap: float
    level_bits: int
    def __init__(self, num_clients: _Optional[int] = ..., dim: _Optional[int] = ..., neighbours: _Optional[int] = ..., threshold: _Optional[int] = ..., clip: _Optional[float] = ..., max_weight: _Optional[float] = ..., graph_seed: _Optional[int] = ..., rounding: _Optional[str] = ..., cohort: _Optional[_Iterable[str]] = ..., index: _Optional[int] = ..., dp_clip_norm: _Optional[float] = ..., dp_weight_cap: _Optional[float] = ..., level_bits: _Optional[int] = ...) -> None: ...

class SecAggAdvert(_message.Message):
    __slots__ = ("advertise", "identity_public")
    ADVERTISE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    advertise: bytes
    identity_public: bytes
    def __init__(self, advertise: _Optional[bytes] = ..., identity_public: _Optional[bytes] = ...) -> None: ...

class SecAggIdentity(_message.Message):
    __slots__ = ("client", "public")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    client: int
    public: bytes
    def __init__(self, client: _Optional[int] = ..., public: _Optional[bytes] = ...) -> None: ...

class SecAggDirectory(_message.Message):
    __slots__ = ("key_directory", "identities")
    KEY_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    key_directory: bytes
    identities: _containers.RepeatedCompositeFieldContainer[SecAggIdentity]
    def __init__(self, key_directory: _Optional[bytes] = ..., identities: _Optional[_Iterable[_Union[SecAggIdentity, _Mapping]]] = ...) -> None: ...

class SecAggStreamHeader(_message.Message):
    __slots__ = ("version", "run_id", "round", "node", "step", "length", "sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    round: int
    node: str
    step: SecAggStep
    length: int
    sha256: bytes
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., node: _Optional[str] = ..., step: _Optional[_Union[SecAggStep, str]] = ..., length: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class SecAggSendPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: SecAggStreamHeader
    chunk: _murmura_pb2.Chunk
    def __init__(self, header: _Optional[_Union[SecAggStreamHeader, _Mapping]] = ..., chunk: _Optional[_Union[_murmura_pb2.Chunk, _Mapping]] = ...) -> None: ...
