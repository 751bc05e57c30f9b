from murmura.transport.proto import murmura_pb2 as _murmura_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelRequest(_message.Message):
    __slots__ = ("version", "run_id", "node", "round", "wait_ms", "public_copy")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_COPY_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    node: str
    round: int
    wait_ms: int
    public_copy: bool
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., node: _Optional[str] = ..., round: _Optional[int] = ..., wait_ms: _Optional[int] = ..., public_copy: _Optional[bool] = ...) -> None: ...

class ModelHeader(_message.Message):
    __slots__ = ("version", "run_id", "round", "node", "available", "latest_round", "weights")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LATEST_ROUND_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    round: int
    node: str
    available: bool
    latest_round: int
    weights: _murmura_pb2.BlobHeader
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., node: _Optional[str] = ..., available: _Optional[bool] = ..., latest_round: _Optional[int] = ..., weights: _Optional[_Union[_murmura_pb2.BlobHeader, _Mapping]] = ...) -> None: ...

class ModelPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ModelHeader
    chunk: _murmura_pb2.Chunk
    def __init__(self, header: _Optional[_Union[ModelHeader, _Mapping]] = ..., chunk: _Optional[_Union[_murmura_pb2.Chunk, _Mapping]] = ...) -> None: ...
