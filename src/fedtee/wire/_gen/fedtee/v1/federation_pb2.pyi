from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Evidence(_message.Message):
    __slots__ = ("tee", "data", "aux")
    class AuxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    TEE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    AUX_FIELD_NUMBER: _ClassVar[int]
    tee: str
    data: bytes
    aux: _containers.ScalarMap[str, bytes]
    def __init__(self, tee: _Optional[str] = ..., data: _Optional[bytes] = ..., aux: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class ChallengeRequest(_message.Message):
    __slots__ = ("client_id", "tee", "aux")
    class AuxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TEE_FIELD_NUMBER: _ClassVar[int]
    AUX_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    tee: str
    aux: _containers.ScalarMap[str, bytes]
    def __init__(self, client_id: _Optional[str] = ..., tee: _Optional[str] = ..., aux: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("nonce", "expires_unix_ms", "federation_id", "aux")
    class AuxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    AUX_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    expires_unix_ms: int
    federation_id: str
    aux: _containers.ScalarMap[str, bytes]
    def __init__(self, nonce: _Optional[bytes] = ..., expires_unix_ms: _Optional[int] = ..., federation_id: _Optional[str] = ..., aux: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("client_id", "nonce", "public_key", "evidence")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    nonce: bytes
    public_key: bytes
    evidence: Evidence
    def __init__(self, client_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., evidence: _Optional[_Union[Evidence, _Mapping]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("accepted", "reason", "message", "credential", "credential_expires_unix_ms", "attestation_result_json")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    message: str
    credential: bytes
    credential_expires_unix_ms: int
    attestation_result_json: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., credential: _Optional[bytes] = ..., credential_expires_unix_ms: _Optional[int] = ..., attestation_result_json: _Optional[str] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("kind", "round", "global_model_digest", "global_model_size", "retry_after_ms", "config", "deadline_unix_ms", "federation_id")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Task.Kind]
        TRAIN: _ClassVar[Task.Kind]
        WAIT: _ClassVar[Task.Kind]
        FINISHED: _ClassVar[Task.Kind]
        REATTEST: _ClassVar[Task.Kind]
    KIND_UNSPECIFIED: Task.Kind
    TRAIN: Task.Kind
    WAIT: Task.Kind
    FINISHED: Task.Kind
    REATTEST: Task.Kind
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_MODEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    kind: Task.Kind
    round: int
    global_model_digest: bytes
    global_model_size: int
    retry_after_ms: int
    config: _containers.ScalarMap[str, str]
    deadline_unix_ms: int
    federation_id: str
    def __init__(self, kind: _Optional[_Union[Task.Kind, str]] = ..., round: _Optional[int] = ..., global_model_digest: _Optional[bytes] = ..., global_model_size: _Optional[int] = ..., retry_after_ms: _Optional[int] = ..., config: _Optional[_Mapping[str, str]] = ..., deadline_unix_ms: _Optional[int] = ..., federation_id: _Optional[str] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("round", "digest", "offset")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    round: int
    digest: bytes
    offset: int
    def __init__(self, round: _Optional[int] = ..., digest: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("data", "offset", "total_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total_size: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ...) -> None: ...

class SignedReceipt(_message.Message):
    __slots__ = ("receipt", "signature")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    receipt: bytes
    signature: bytes
    def __init__(self, receipt: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("receipt", "size", "encoding", "offset")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    receipt: SignedReceipt
    size: int
    encoding: str
    offset: int
    def __init__(self, receipt: _Optional[_Union[SignedReceipt, _Mapping]] = ..., size: _Optional[int] = ..., encoding: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class UpdateChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SubmitResult(_message.Message):
    __slots__ = ("accepted", "reason", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ServerEvidenceRequest(_message.Message):
    __slots__ = ("nonce", "aux")
    class AuxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    NONCE_FIELD_NUMBER: _ClassVar[int]
    AUX_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    aux: _containers.ScalarMap[str, bytes]
    def __init__(self, nonce: _Optional[bytes] = ..., aux: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class ServerEvidence(_message.Message):
    __slots__ = ("evidence", "public_key", "challenge_request")
    class ChallengeRequestEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    evidence: Evidence
    public_key: bytes
    challenge_request: _containers.ScalarMap[str, bytes]
    def __init__(self, evidence: _Optional[_Union[Evidence, _Mapping]] = ..., public_key: _Optional[bytes] = ..., challenge_request: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class UploadStatusRequest(_message.Message):
    __slots__ = ("receipt_hash",)
    RECEIPT_HASH_FIELD_NUMBER: _ClassVar[int]
    receipt_hash: bytes
    def __init__(self, receipt_hash: _Optional[bytes] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("committed", "size")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    committed: int
    size: int
    def __init__(self, committed: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...
