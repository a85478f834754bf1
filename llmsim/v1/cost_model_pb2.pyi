from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_CURRENT: _ClassVar[ProtocolVersion]

class OperatorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATOR_KIND_UNSPECIFIED: _ClassVar[OperatorKind]
    OPERATOR_KIND_GEMM: _ClassVar[OperatorKind]
    OPERATOR_KIND_ATTENTION: _ClassVar[OperatorKind]
    OPERATOR_KIND_ELEMENTWISE: _ClassVar[OperatorKind]
    OPERATOR_KIND_COLLECTIVE: _ClassVar[OperatorKind]
    OPERATOR_KIND_MEMORY_TRANSFER: _ClassVar[OperatorKind]
    OPERATOR_KIND_MOE: _ClassVar[OperatorKind]

class AttentionDetail(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTENTION_DETAIL_UNSPECIFIED: _ClassVar[AttentionDetail]
    ATTENTION_DETAIL_SUMMARY: _ClassVar[AttentionDetail]
    ATTENTION_DETAIL_PER_DECODE: _ClassVar[AttentionDetail]

class MemoryTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_TIER_UNSPECIFIED: _ClassVar[MemoryTier]
    MEMORY_TIER_DEVICE: _ClassVar[MemoryTier]
    MEMORY_TIER_HOST: _ClassVar[MemoryTier]
    MEMORY_TIER_PEER: _ClassVar[MemoryTier]
    MEMORY_TIER_CXL: _ClassVar[MemoryTier]
    MEMORY_TIER_STORAGE: _ClassVar[MemoryTier]

class OpErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_ERROR_CODE_UNSPECIFIED: _ClassVar[OpErrorCode]
    OP_ERROR_CODE_UNSUPPORTED: _ClassVar[OpErrorCode]
    OP_ERROR_CODE_OUT_OF_RANGE: _ClassVar[OpErrorCode]
    OP_ERROR_CODE_INVALID: _ClassVar[OpErrorCode]
    OP_ERROR_CODE_INTERNAL: _ClassVar[OpErrorCode]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_CURRENT: ProtocolVersion
OPERATOR_KIND_UNSPECIFIED: OperatorKind
OPERATOR_KIND_GEMM: OperatorKind
OPERATOR_KIND_ATTENTION: OperatorKind
OPERATOR_KIND_ELEMENTWISE: OperatorKind
OPERATOR_KIND_COLLECTIVE: OperatorKind
OPERATOR_KIND_MEMORY_TRANSFER: OperatorKind
OPERATOR_KIND_MOE: OperatorKind
ATTENTION_DETAIL_UNSPECIFIED: AttentionDetail
ATTENTION_DETAIL_SUMMARY: AttentionDetail
ATTENTION_DETAIL_PER_DECODE: AttentionDetail
MEMORY_TIER_UNSPECIFIED: MemoryTier
MEMORY_TIER_DEVICE: MemoryTier
MEMORY_TIER_HOST: MemoryTier
MEMORY_TIER_PEER: MemoryTier
MEMORY_TIER_CXL: MemoryTier
MEMORY_TIER_STORAGE: MemoryTier
OP_ERROR_CODE_UNSPECIFIED: OpErrorCode
OP_ERROR_CODE_UNSUPPORTED: OpErrorCode
OP_ERROR_CODE_OUT_OF_RANGE: OpErrorCode
OP_ERROR_CODE_INVALID: OpErrorCode
OP_ERROR_CODE_INTERNAL: OpErrorCode

class DescribeRequest(_message.Message):
    __slots__ = ("protocol_version",)
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    def __init__(self, protocol_version: _Optional[int] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("protocol_version", "server_name", "server_version", "hardware", "hardware_description", "operator_kinds", "provides_energy", "attention_detail", "dtypes", "model_name", "tp_degrees", "fingerprint", "max_message_bytes", "attributes", "supports_stream")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_KINDS_FIELD_NUMBER: _ClassVar[int]
    PROVIDES_ENERGY_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_DETAIL_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    TP_DEGREES_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STREAM_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    server_name: str
    server_version: str
    hardware: str
    hardware_description: str
    operator_kinds: _containers.RepeatedScalarFieldContainer[OperatorKind]
    provides_energy: bool
    attention_detail: AttentionDetail
    dtypes: _containers.RepeatedScalarFieldContainer[str]
    model_name: str
    tp_degrees: _containers.RepeatedScalarFieldContainer[int]
    fingerprint: str
    max_message_bytes: int
    attributes: _containers.ScalarMap[str, str]
    supports_stream: bool
    def __init__(self, protocol_version: _Optional[int] = ..., server_name: _Optional[str] = ..., server_version: _Optional[str] = ..., hardware: _Optional[str] = ..., hardware_description: _Optional[str] = ..., operator_kinds: _Optional[_Iterable[_Union[OperatorKind, str]]] = ..., provides_energy: _Optional[bool] = ..., attention_detail: _Optional[_Union[AttentionDetail, str]] = ..., dtypes: _Optional[_Iterable[str]] = ..., model_name: _Optional[str] = ..., tp_degrees: _Optional[_Iterable[int]] = ..., fingerprint: _Optional[str] = ..., max_message_bytes: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., supports_stream: _Optional[bool] = ...) -> None: ...

class GemmShape(_message.Message):
    __slots__ = ("m", "n", "k")
    M_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    m: int
    n: int
    k: int
    def __init__(self, m: _Optional[int] = ..., n: _Optional[int] = ..., k: _Optional[int] = ...) -> None: ...

class PrefillChunkShape(_message.Message):
    __slots__ = ("new_tokens", "cached_tokens")
    NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    new_tokens: int
    cached_tokens: int
    def __init__(self, new_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ...) -> None: ...

class AttentionShape(_message.Message):
    __slots__ = ("num_q_heads", "num_kv_heads", "head_dim", "prefills", "num_decodes", "decode_kv_sum", "decode_kv_max", "decode_kv_min", "decode_kv_lens")
    NUM_Q_HEADS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    PREFILLS_FIELD_NUMBER: _ClassVar[int]
    NUM_DECODES_FIELD_NUMBER: _ClassVar[int]
    DECODE_KV_SUM_FIELD_NUMBER: _ClassVar[int]
    DECODE_KV_MAX_FIELD_NUMBER: _ClassVar[int]
    DECODE_KV_MIN_FIELD_NUMBER: _ClassVar[int]
    DECODE_KV_LENS_FIELD_NUMBER: _ClassVar[int]
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    prefills: _containers.RepeatedCompositeFieldContainer[PrefillChunkShape]
    num_decodes: int
    decode_kv_sum: int
    decode_kv_max: int
    decode_kv_min: int
    decode_kv_lens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, num_q_heads: _Optional[int] = ..., num_kv_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., prefills: _Optional[_Iterable[_Union[PrefillChunkShape, _Mapping]]] = ..., num_decodes: _Optional[int] = ..., decode_kv_sum: _Optional[int] = ..., decode_kv_max: _Optional[int] = ..., decode_kv_min: _Optional[int] = ..., decode_kv_lens: _Optional[_Iterable[int]] = ...) -> None: ...

class ElementwiseShape(_message.Message):
    __slots__ = ("rows", "row_elements")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROW_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    row_elements: int
    def __init__(self, rows: _Optional[int] = ..., row_elements: _Optional[int] = ...) -> None: ...

class CollectiveShape(_message.Message):
    __slots__ = ("collective", "bytes", "ranks")
    COLLECTIVE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    collective: str
    bytes: int
    ranks: int
    def __init__(self, collective: _Optional[str] = ..., bytes: _Optional[int] = ..., ranks: _Optional[int] = ...) -> None: ...

class MemoryTransferShape(_message.Message):
    __slots__ = ("bytes", "tier")
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    tier: MemoryTier
    def __init__(self, bytes: _Optional[int] = ..., tier: _Optional[_Union[MemoryTier, str]] = ...) -> None: ...

class MoeShape(_message.Message):
    __slots__ = ("tokens", "num_experts", "experts_per_token", "hidden_size", "intermediate_size")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    tokens: int
    num_experts: int
    experts_per_token: int
    hidden_size: int
    intermediate_size: int
    def __init__(self, tokens: _Optional[int] = ..., num_experts: _Optional[int] = ..., experts_per_token: _Optional[int] = ..., hidden_size: _Optional[int] = ..., intermediate_size: _Optional[int] = ...) -> None: ...

class OpQuery(_message.Message):
    __slots__ = ("op_name", "dtype", "tp_degree", "tp_rank", "repetitions", "gemm", "attention", "elementwise", "collective", "memory_transfer", "moe")
    OP_NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    TP_DEGREE_FIELD_NUMBER: _ClassVar[int]
    TP_RANK_FIELD_NUMBER: _ClassVar[int]
    REPETITIONS_FIELD_NUMBER: _ClassVar[int]
    GEMM_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    ELEMENTWISE_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    MOE_FIELD_NUMBER: _ClassVar[int]
    op_name: str
    dtype: str
    tp_degree: int
    tp_rank: int
    repetitions: int
    gemm: GemmShape
    attention: AttentionShape
    elementwise: ElementwiseShape
    collective: CollectiveShape
    memory_transfer: MemoryTransferShape
    moe: MoeShape
    def __init__(self, op_name: _Optional[str] = ..., dtype: _Optional[str] = ..., tp_degree: _Optional[int] = ..., tp_rank: _Optional[int] = ..., repetitions: _Optional[int] = ..., gemm: _Optional[_Union[GemmShape, _Mapping]] = ..., attention: _Optional[_Union[AttentionShape, _Mapping]] = ..., elementwise: _Optional[_Union[ElementwiseShape, _Mapping]] = ..., collective: _Optional[_Union[CollectiveShape, _Mapping]] = ..., memory_transfer: _Optional[_Union[MemoryTransferShape, _Mapping]] = ..., moe: _Optional[_Union[MoeShape, _Mapping]] = ...) -> None: ...

class CostBatchRequest(_message.Message):
    __slots__ = ("protocol_version", "queries", "num_needed")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    NUM_NEEDED_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    queries: _containers.RepeatedCompositeFieldContainer[OpQuery]
    num_needed: int
    def __init__(self, protocol_version: _Optional[int] = ..., queries: _Optional[_Iterable[_Union[OpQuery, _Mapping]]] = ..., num_needed: _Optional[int] = ...) -> None: ...

class OpCost(_message.Message):
    __slots__ = ("latency_ns", "energy_j")
    LATENCY_NS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    latency_ns: float
    energy_j: float
    def __init__(self, latency_ns: _Optional[float] = ..., energy_j: _Optional[float] = ...) -> None: ...

class OpError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: OpErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[OpErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class OpAnswer(_message.Message):
    __slots__ = ("cost", "error")
    COST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    cost: OpCost
    error: OpError
    def __init__(self, cost: _Optional[_Union[OpCost, _Mapping]] = ..., error: _Optional[_Union[OpError, _Mapping]] = ...) -> None: ...

class CostBatchResponse(_message.Message):
    __slots__ = ("answers", "first_query")
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    FIRST_QUERY_FIELD_NUMBER: _ClassVar[int]
    answers: _containers.RepeatedCompositeFieldContainer[OpAnswer]
    first_query: int
    def __init__(self, answers: _Optional[_Iterable[_Union[OpAnswer, _Mapping]]] = ..., first_query: _Optional[int] = ...) -> None: ...
