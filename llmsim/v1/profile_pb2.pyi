from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_KIND_UNSPECIFIED: _ClassVar[OpKind]
    OP_KIND_DENSE: _ClassVar[OpKind]
    OP_KIND_PER_SEQUENCE: _ClassVar[OpKind]
    OP_KIND_ATTENTION: _ClassVar[OpKind]
    OP_KIND_MOE: _ClassVar[OpKind]
    OP_KIND_COLLECTIVE: _ClassVar[OpKind]
OP_KIND_UNSPECIFIED: OpKind
OP_KIND_DENSE: OpKind
OP_KIND_PER_SEQUENCE: OpKind
OP_KIND_ATTENTION: OpKind
OP_KIND_MOE: OpKind
OP_KIND_COLLECTIVE: OpKind

class Profile(_message.Message):
    __slots__ = ("schema_version", "provenance", "model", "dtype", "tp", "collectives", "idle_power_w")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVES_FIELD_NUMBER: _ClassVar[int]
    IDLE_POWER_W_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    provenance: Provenance
    model: ModelArchitecture
    dtype: str
    tp: _containers.RepeatedCompositeFieldContainer[TpProfile]
    collectives: _containers.RepeatedCompositeFieldContainer[OpTable]
    idle_power_w: float
    def __init__(self, schema_version: _Optional[int] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., model: _Optional[_Union[ModelArchitecture, _Mapping]] = ..., dtype: _Optional[str] = ..., tp: _Optional[_Iterable[_Union[TpProfile, _Mapping]]] = ..., collectives: _Optional[_Iterable[_Union[OpTable, _Mapping]]] = ..., idle_power_w: _Optional[float] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("device_name", "hardware", "driver_version", "runtime_version", "framework", "framework_version", "profiler_name", "profiler_version", "measured_at", "measured_until", "method", "source", "host", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILER_NAME_FIELD_NUMBER: _ClassVar[int]
    PROFILER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    MEASURED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    device_name: str
    hardware: str
    driver_version: str
    runtime_version: str
    framework: str
    framework_version: str
    profiler_name: str
    profiler_version: str
    measured_at: str
    measured_until: str
    method: MeasurementMethod
    source: Source
    host: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, device_name: _Optional[str] = ..., hardware: _Optional[str] = ..., driver_version: _Optional[str] = ..., runtime_version: _Optional[str] = ..., framework: _Optional[str] = ..., framework_version: _Optional[str] = ..., profiler_name: _Optional[str] = ..., profiler_version: _Optional[str] = ..., measured_at: _Optional[str] = ..., measured_until: _Optional[str] = ..., method: _Optional[_Union[MeasurementMethod, _Mapping]] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., host: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MeasurementMethod(_message.Message):
    __slots__ = ("timer", "warmup_iterations", "timed_iterations", "cuda_graphs", "num_threads", "statistic", "notes")
    TIMER_FIELD_NUMBER: _ClassVar[int]
    WARMUP_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    TIMED_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    CUDA_GRAPHS_FIELD_NUMBER: _ClassVar[int]
    NUM_THREADS_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    timer: str
    warmup_iterations: int
    timed_iterations: int
    cuda_graphs: bool
    num_threads: int
    statistic: str
    notes: str
    def __init__(self, timer: _Optional[str] = ..., warmup_iterations: _Optional[int] = ..., timed_iterations: _Optional[int] = ..., cuda_graphs: _Optional[bool] = ..., num_threads: _Optional[int] = ..., statistic: _Optional[str] = ..., notes: _Optional[str] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("kind", "name", "uri", "commit", "path", "license")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    uri: str
    commit: str
    path: str
    license: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., uri: _Optional[str] = ..., commit: _Optional[str] = ..., path: _Optional[str] = ..., license: _Optional[str] = ...) -> None: ...

class ModelArchitecture(_message.Message):
    __slots__ = ("name", "architecture", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size", "num_experts", "num_experts_per_token", "moe_intermediate_size", "dtype_bytes", "config_sha256", "tie_word_embeddings")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    NUM_HIDDEN_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_ATTENTION_HEADS_FIELD_NUMBER: _ClassVar[int]
    NUM_KEY_VALUE_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXPERTS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MOE_INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SHA256_FIELD_NUMBER: _ClassVar[int]
    TIE_WORD_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    architecture: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_experts: int
    num_experts_per_token: int
    moe_intermediate_size: int
    dtype_bytes: int
    config_sha256: str
    tie_word_embeddings: bool
    def __init__(self, name: _Optional[str] = ..., architecture: _Optional[str] = ..., num_hidden_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., num_attention_heads: _Optional[int] = ..., num_key_value_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., intermediate_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., num_experts: _Optional[int] = ..., num_experts_per_token: _Optional[int] = ..., moe_intermediate_size: _Optional[int] = ..., dtype_bytes: _Optional[int] = ..., config_sha256: _Optional[str] = ..., tie_word_embeddings: _Optional[bool] = ...) -> None: ...

class TpProfile(_message.Message):
    __slots__ = ("tp_degree", "ops", "skew", "skew_fit")
    TP_DEGREE_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    SKEW_FIELD_NUMBER: _ClassVar[int]
    SKEW_FIT_FIELD_NUMBER: _ClassVar[int]
    tp_degree: int
    ops: _containers.RepeatedCompositeFieldContainer[OpTable]
    skew: SkewTable
    skew_fit: SkewFit
    def __init__(self, tp_degree: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[OpTable, _Mapping]]] = ..., skew: _Optional[_Union[SkewTable, _Mapping]] = ..., skew_fit: _Optional[_Union[SkewFit, _Mapping]] = ...) -> None: ...

class Axis(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[int]] = ...) -> None: ...

class OpTable(_message.Message):
    __slots__ = ("op", "kind", "axes", "median_ns", "mean_ns", "p90_ns", "min_ns", "max_ns", "std_ns", "num_samples", "energy_j", "avg_power_w", "energy_source", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AXES_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_NS_FIELD_NUMBER: _ClassVar[int]
    MEAN_NS_FIELD_NUMBER: _ClassVar[int]
    P90_NS_FIELD_NUMBER: _ClassVar[int]
    MIN_NS_FIELD_NUMBER: _ClassVar[int]
    MAX_NS_FIELD_NUMBER: _ClassVar[int]
    STD_NS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    AVG_POWER_W_FIELD_NUMBER: _ClassVar[int]
    ENERGY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    op: str
    kind: OpKind
    axes: _containers.RepeatedCompositeFieldContainer[Axis]
    median_ns: _containers.RepeatedScalarFieldContainer[float]
    mean_ns: _containers.RepeatedScalarFieldContainer[float]
    p90_ns: _containers.RepeatedScalarFieldContainer[float]
    min_ns: _containers.RepeatedScalarFieldContainer[float]
    max_ns: _containers.RepeatedScalarFieldContainer[float]
    std_ns: _containers.RepeatedScalarFieldContainer[float]
    num_samples: _containers.RepeatedScalarFieldContainer[int]
    energy_j: _containers.RepeatedScalarFieldContainer[float]
    avg_power_w: _containers.RepeatedScalarFieldContainer[float]
    energy_source: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, op: _Optional[str] = ..., kind: _Optional[_Union[OpKind, str]] = ..., axes: _Optional[_Iterable[_Union[Axis, _Mapping]]] = ..., median_ns: _Optional[_Iterable[float]] = ..., mean_ns: _Optional[_Iterable[float]] = ..., p90_ns: _Optional[_Iterable[float]] = ..., min_ns: _Optional[_Iterable[float]] = ..., max_ns: _Optional[_Iterable[float]] = ..., std_ns: _Optional[_Iterable[float]] = ..., num_samples: _Optional[_Iterable[int]] = ..., energy_j: _Optional[_Iterable[float]] = ..., avg_power_w: _Optional[_Iterable[float]] = ..., energy_source: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SkewTable(_message.Message):
    __slots__ = ("regime", "n", "nb", "ratio", "skew", "pc", "kp", "kvs", "kv_big", "kv_mean", "t_mean_ns", "t_max_ns", "t_skew_ns", "alpha")
    REGIME_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    NB_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    SKEW_FIELD_NUMBER: _ClassVar[int]
    PC_FIELD_NUMBER: _ClassVar[int]
    KP_FIELD_NUMBER: _ClassVar[int]
    KVS_FIELD_NUMBER: _ClassVar[int]
    KV_BIG_FIELD_NUMBER: _ClassVar[int]
    KV_MEAN_FIELD_NUMBER: _ClassVar[int]
    T_MEAN_NS_FIELD_NUMBER: _ClassVar[int]
    T_MAX_NS_FIELD_NUMBER: _ClassVar[int]
    T_SKEW_NS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    regime: _containers.RepeatedScalarFieldContainer[str]
    n: _containers.RepeatedScalarFieldContainer[int]
    nb: _containers.RepeatedScalarFieldContainer[int]
    ratio: _containers.RepeatedScalarFieldContainer[float]
    skew: _containers.RepeatedScalarFieldContainer[float]
    pc: _containers.RepeatedScalarFieldContainer[int]
    kp: _containers.RepeatedScalarFieldContainer[int]
    kvs: _containers.RepeatedScalarFieldContainer[int]
    kv_big: _containers.RepeatedScalarFieldContainer[int]
    kv_mean: _containers.RepeatedScalarFieldContainer[int]
    t_mean_ns: _containers.RepeatedScalarFieldContainer[float]
    t_max_ns: _containers.RepeatedScalarFieldContainer[float]
    t_skew_ns: _containers.RepeatedScalarFieldContainer[float]
    alpha: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, regime: _Optional[_Iterable[str]] = ..., n: _Optional[_Iterable[int]] = ..., nb: _Optional[_Iterable[int]] = ..., ratio: _Optional[_Iterable[float]] = ..., skew: _Optional[_Iterable[float]] = ..., pc: _Optional[_Iterable[int]] = ..., kp: _Optional[_Iterable[int]] = ..., kvs: _Optional[_Iterable[int]] = ..., kv_big: _Optional[_Iterable[int]] = ..., kv_mean: _Optional[_Iterable[int]] = ..., t_mean_ns: _Optional[_Iterable[float]] = ..., t_max_ns: _Optional[_Iterable[float]] = ..., t_skew_ns: _Optional[_Iterable[float]] = ..., alpha: _Optional[_Iterable[float]] = ...) -> None: ...

class SkewFit(_message.Message):
    __slots__ = ("method", "alpha_default", "num_samples", "n_edges", "n_labels", "skew_rate_edges", "skew_rate_labels", "kv_big_edges", "kv_big_labels", "kp_edges", "kp_labels", "pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label", "bucket_alpha", "bucket_num_samples", "fit_stats", "disabled_by_source")
    class FitStatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ALPHA_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_EDGES_FIELD_NUMBER: _ClassVar[int]
    N_LABELS_FIELD_NUMBER: _ClassVar[int]
    SKEW_RATE_EDGES_FIELD_NUMBER: _ClassVar[int]
    SKEW_RATE_LABELS_FIELD_NUMBER: _ClassVar[int]
    KV_BIG_EDGES_FIELD_NUMBER: _ClassVar[int]
    KV_BIG_LABELS_FIELD_NUMBER: _ClassVar[int]
    KP_EDGES_FIELD_NUMBER: _ClassVar[int]
    KP_LABELS_FIELD_NUMBER: _ClassVar[int]
    PC_FIELD_NUMBER: _ClassVar[int]
    N_LABEL_FIELD_NUMBER: _ClassVar[int]
    SKEW_RATE_LABEL_FIELD_NUMBER: _ClassVar[int]
    KV_BIG_LABEL_FIELD_NUMBER: _ClassVar[int]
    KP_LABEL_FIELD_NUMBER: _ClassVar[int]
    BUCKET_ALPHA_FIELD_NUMBER: _ClassVar[int]
    BUCKET_NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FIT_STATS_FIELD_NUMBER: _ClassVar[int]
    DISABLED_BY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    method: str
    alpha_default: float
    num_samples: int
    n_edges: _containers.RepeatedScalarFieldContainer[float]
    n_labels: _containers.RepeatedScalarFieldContainer[str]
    skew_rate_edges: _containers.RepeatedScalarFieldContainer[float]
    skew_rate_labels: _containers.RepeatedScalarFieldContainer[str]
    kv_big_edges: _containers.RepeatedScalarFieldContainer[float]
    kv_big_labels: _containers.RepeatedScalarFieldContainer[str]
    kp_edges: _containers.RepeatedScalarFieldContainer[float]
    kp_labels: _containers.RepeatedScalarFieldContainer[str]
    pc: _containers.RepeatedScalarFieldContainer[int]
    n_label: _containers.RepeatedScalarFieldContainer[str]
    skew_rate_label: _containers.RepeatedScalarFieldContainer[str]
    kv_big_label: _containers.RepeatedScalarFieldContainer[str]
    kp_label: _containers.RepeatedScalarFieldContainer[str]
    bucket_alpha: _containers.RepeatedScalarFieldContainer[float]
    bucket_num_samples: _containers.RepeatedScalarFieldContainer[int]
    fit_stats: _containers.ScalarMap[str, float]
    disabled_by_source: bool
    def __init__(self, method: _Optional[str] = ..., alpha_default: _Optional[float] = ..., num_samples: _Optional[int] = ..., n_edges: _Optional[_Iterable[float]] = ..., n_labels: _Optional[_Iterable[str]] = ..., skew_rate_edges: _Optional[_Iterable[float]] = ..., skew_rate_labels: _Optional[_Iterable[str]] = ..., kv_big_edges: _Optional[_Iterable[float]] = ..., kv_big_labels: _Optional[_Iterable[str]] = ..., kp_edges: _Optional[_Iterable[float]] = ..., kp_labels: _Optional[_Iterable[str]] = ..., pc: _Optional[_Iterable[int]] = ..., n_label: _Optional[_Iterable[str]] = ..., skew_rate_label: _Optional[_Iterable[str]] = ..., kv_big_label: _Optional[_Iterable[str]] = ..., kp_label: _Optional[_Iterable[str]] = ..., bucket_alpha: _Optional[_Iterable[float]] = ..., bucket_num_samples: _Optional[_Iterable[int]] = ..., fit_stats: _Optional[_Mapping[str, float]] = ..., disabled_by_source: _Optional[bool] = ...) -> None: ...
