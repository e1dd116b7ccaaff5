from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class Result(_message.Message):
    __slots__ = ["attempt_id", "duration_ms", "error", "image", "node", "size_bytes", "started_at"]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    attempt_id: str
    duration_ms: int
    error: str
    image: str
    node: str
    size_bytes: int
    started_at: int
    def __init__(self, attempt_id: _Optional[str] = ..., started_at: _Optional[int] = ..., image: _Optional[str] = ..., error: _Optional[str] = ..., duration_ms: _Optional[int] = ..., node: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...
