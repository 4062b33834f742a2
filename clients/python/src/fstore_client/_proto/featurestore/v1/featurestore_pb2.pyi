from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValueType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_TYPE_UNSPECIFIED: _ClassVar[ValueType]
    VALUE_TYPE_F64: _ClassVar[ValueType]
    VALUE_TYPE_I64: _ClassVar[ValueType]
    VALUE_TYPE_BOOL: _ClassVar[ValueType]
    VALUE_TYPE_STRING: _ClassVar[ValueType]
    VALUE_TYPE_BYTES: _ClassVar[ValueType]
    VALUE_TYPE_TENSOR: _ClassVar[ValueType]
    VALUE_TYPE_RELATION: _ClassVar[ValueType]

class Serving(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVING_UNSPECIFIED: _ClassVar[Serving]
    SERVING_ONLINE: _ClassVar[Serving]
    SERVING_SNAPSHOT: _ClassVar[Serving]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_ASYNC: _ClassVar[Mode]
    MODE_SYNC: _ClassVar[Mode]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_READY: _ClassVar[Status]
    STATUS_STALE: _ClassVar[Status]
    STATUS_PENDING: _ClassVar[Status]
    STATUS_FAILED: _ClassVar[Status]
    STATUS_CANCELED: _ClassVar[Status]

class BackfillState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKFILL_STATE_UNSPECIFIED: _ClassVar[BackfillState]
    BACKFILL_STATE_RUNNING: _ClassVar[BackfillState]
    BACKFILL_STATE_DONE: _ClassVar[BackfillState]
    BACKFILL_STATE_CANCELED: _ClassVar[BackfillState]

class GenerationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENERATION_STATE_UNSPECIFIED: _ClassVar[GenerationState]
    GENERATION_STATE_STAGING: _ClassVar[GenerationState]
    GENERATION_STATE_PUBLISHED: _ClassVar[GenerationState]
    GENERATION_STATE_SUPERSEDED: _ClassVar[GenerationState]
    GENERATION_STATE_REJECTED: _ClassVar[GenerationState]
    GENERATION_STATE_ABANDONED: _ClassVar[GenerationState]
VALUE_TYPE_UNSPECIFIED: ValueType
VALUE_TYPE_F64: ValueType
VALUE_TYPE_I64: ValueType
VALUE_TYPE_BOOL: ValueType
VALUE_TYPE_STRING: ValueType
VALUE_TYPE_BYTES: ValueType
VALUE_TYPE_TENSOR: ValueType
VALUE_TYPE_RELATION: ValueType
SERVING_UNSPECIFIED: Serving
SERVING_ONLINE: Serving
SERVING_SNAPSHOT: Serving
MODE_ASYNC: Mode
MODE_SYNC: Mode
STATUS_UNSPECIFIED: Status
STATUS_READY: Status
STATUS_STALE: Status
STATUS_PENDING: Status
STATUS_FAILED: Status
STATUS_CANCELED: Status
BACKFILL_STATE_UNSPECIFIED: BackfillState
BACKFILL_STATE_RUNNING: BackfillState
BACKFILL_STATE_DONE: BackfillState
BACKFILL_STATE_CANCELED: BackfillState
GENERATION_STATE_UNSPECIFIED: GenerationState
GENERATION_STATE_STAGING: GenerationState
GENERATION_STATE_PUBLISHED: GenerationState
GENERATION_STATE_SUPERSEDED: GenerationState
GENERATION_STATE_REJECTED: GenerationState
GENERATION_STATE_ABANDONED: GenerationState

class ApiKey(_message.Message):
    __slots__ = ("id", "tenant", "roles", "label", "created_at_ms", "revoked_at_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    label: str
    created_at_ms: int
    revoked_at_ms: int
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., label: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., revoked_at_ms: _Optional[int] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant", "roles", "label")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    label: str
    def __init__(self, tenant: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., label: _Optional[str] = ...) -> None: ...

class CreatedApiKey(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("f64", "i64", "bool", "string", "bytes", "tensor", "relation")
    F64_FIELD_NUMBER: _ClassVar[int]
    I64_FIELD_NUMBER: _ClassVar[int]
    BOOL_FIELD_NUMBER: _ClassVar[int]
    STRING_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    f64: float
    i64: int
    bool: bool
    string: str
    bytes: bytes
    tensor: Tensor
    relation: Relation
    def __init__(self, f64: _Optional[float] = ..., i64: _Optional[int] = ..., bool: _Optional[bool] = ..., string: _Optional[str] = ..., bytes: _Optional[bytes] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., relation: _Optional[_Union[Relation, _Mapping]] = ...) -> None: ...

class Relation(_message.Message):
    __slots__ = ("entity_type", "ids")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entity_type: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[_Iterable[float]] = ...) -> None: ...

class InputBinding(_message.Message):
    __slots__ = ("feature", "request", "related")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    feature: str
    request: str
    related: Related
    def __init__(self, feature: _Optional[str] = ..., request: _Optional[str] = ..., related: _Optional[_Union[Related, _Mapping]] = ...) -> None: ...

class Related(_message.Message):
    __slots__ = ("via", "feature", "aggregate", "truncate")
    VIA_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    via: _containers.RepeatedScalarFieldContainer[str]
    feature: str
    aggregate: str
    truncate: bool
    def __init__(self, via: _Optional[_Iterable[str]] = ..., feature: _Optional[str] = ..., aggregate: _Optional[str] = ..., truncate: _Optional[bool] = ...) -> None: ...

class FeatureDefinition(_message.Message):
    __slots__ = ("name", "version", "entity_type", "flow", "params", "inputs", "ttl_ms", "owner", "description", "serving", "gate", "relates_to", "tenant", "shared_with")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: InputBinding
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[InputBinding, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    RELATES_TO_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SHARED_WITH_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    entity_type: str
    flow: str
    params: _containers.ScalarMap[str, str]
    inputs: _containers.MessageMap[str, InputBinding]
    ttl_ms: int
    owner: str
    description: str
    serving: Serving
    gate: GateThresholds
    relates_to: str
    tenant: str
    shared_with: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., entity_type: _Optional[str] = ..., flow: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., inputs: _Optional[_Mapping[str, InputBinding]] = ..., ttl_ms: _Optional[int] = ..., owner: _Optional[str] = ..., description: _Optional[str] = ..., serving: _Optional[_Union[Serving, str]] = ..., gate: _Optional[_Union[GateThresholds, _Mapping]] = ..., relates_to: _Optional[str] = ..., tenant: _Optional[str] = ..., shared_with: _Optional[_Iterable[str]] = ...) -> None: ...

class GateThresholds(_message.Message):
    __slots__ = ("max_row_change", "max_failure_rate", "max_null_rate", "max_psi", "max_ks", "max_norm_change", "min_cosine")
    MAX_ROW_CHANGE_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_NULL_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_PSI_FIELD_NUMBER: _ClassVar[int]
    MAX_KS_FIELD_NUMBER: _ClassVar[int]
    MAX_NORM_CHANGE_FIELD_NUMBER: _ClassVar[int]
    MIN_COSINE_FIELD_NUMBER: _ClassVar[int]
    max_row_change: float
    max_failure_rate: float
    max_null_rate: float
    max_psi: float
    max_ks: float
    max_norm_change: float
    min_cosine: float
    def __init__(self, max_row_change: _Optional[float] = ..., max_failure_rate: _Optional[float] = ..., max_null_rate: _Optional[float] = ..., max_psi: _Optional[float] = ..., max_ks: _Optional[float] = ..., max_norm_change: _Optional[float] = ..., min_cosine: _Optional[float] = ...) -> None: ...

class RegisterFeatureRequest(_message.Message):
    __slots__ = ("definition", "force")
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    definition: FeatureDefinition
    force: bool
    def __init__(self, definition: _Optional[_Union[FeatureDefinition, _Mapping]] = ..., force: _Optional[bool] = ...) -> None: ...

class RegisterFeatureResponse(_message.Message):
    __slots__ = ("feature", "lineage_hash", "created")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    feature: FeatureDefinition
    lineage_hash: str
    created: bool
    def __init__(self, feature: _Optional[_Union[FeatureDefinition, _Mapping]] = ..., lineage_hash: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class RegisterFeaturesRequest(_message.Message):
    __slots__ = ("definitions", "force")
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    definitions: _containers.RepeatedCompositeFieldContainer[FeatureDefinition]
    force: bool
    def __init__(self, definitions: _Optional[_Iterable[_Union[FeatureDefinition, _Mapping]]] = ..., force: _Optional[bool] = ...) -> None: ...

class RegisterFeaturesResponse(_message.Message):
    __slots__ = ("registered",)
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    registered: _containers.RepeatedCompositeFieldContainer[RegisterFeatureResponse]
    def __init__(self, registered: _Optional[_Iterable[_Union[RegisterFeatureResponse, _Mapping]]] = ...) -> None: ...

class ListFeaturesRequest(_message.Message):
    __slots__ = ("prefix",)
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    def __init__(self, prefix: _Optional[str] = ...) -> None: ...

class FeatureSummary(_message.Message):
    __slots__ = ("name", "latest_version", "entity_type", "flow", "value_type", "ttl_ms", "owner", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    latest_version: int
    entity_type: str
    flow: str
    value_type: ValueType
    ttl_ms: int
    owner: str
    description: str
    def __init__(self, name: _Optional[str] = ..., latest_version: _Optional[int] = ..., entity_type: _Optional[str] = ..., flow: _Optional[str] = ..., value_type: _Optional[_Union[ValueType, str]] = ..., ttl_ms: _Optional[int] = ..., owner: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListFeaturesResponse(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureSummary]
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureSummary, _Mapping]]] = ...) -> None: ...

class DescribeFeatureRequest(_message.Message):
    __slots__ = ("feature",)
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    def __init__(self, feature: _Optional[str] = ...) -> None: ...

class DescribeFeatureResponse(_message.Message):
    __slots__ = ("definition", "lineage_hash", "value_type", "dependencies", "dependents", "versions", "flow", "stats")
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    definition: FeatureDefinition
    lineage_hash: str
    value_type: ValueType
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    dependents: _containers.RepeatedScalarFieldContainer[str]
    versions: _containers.RepeatedScalarFieldContainer[int]
    flow: FlowInfo
    stats: FeatureStats
    def __init__(self, definition: _Optional[_Union[FeatureDefinition, _Mapping]] = ..., lineage_hash: _Optional[str] = ..., value_type: _Optional[_Union[ValueType, str]] = ..., dependencies: _Optional[_Iterable[str]] = ..., dependents: _Optional[_Iterable[str]] = ..., versions: _Optional[_Iterable[int]] = ..., flow: _Optional[_Union[FlowInfo, _Mapping]] = ..., stats: _Optional[_Union[FeatureStats, _Mapping]] = ...) -> None: ...

class FeatureStats(_message.Message):
    __slots__ = ("hits", "misses", "failures", "hit_rate", "last_computed_at_ms", "ages", "coalesced", "partial", "complete", "oldest_partial_at_ms", "replicas")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    LAST_COMPUTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    AGES_FIELD_NUMBER: _ClassVar[int]
    COALESCED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PARTIAL_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    hits: int
    misses: int
    failures: int
    hit_rate: float
    last_computed_at_ms: int
    ages: _containers.RepeatedCompositeFieldContainer[AgeBucket]
    coalesced: int
    partial: int
    complete: int
    oldest_partial_at_ms: int
    replicas: int
    def __init__(self, hits: _Optional[int] = ..., misses: _Optional[int] = ..., failures: _Optional[int] = ..., hit_rate: _Optional[float] = ..., last_computed_at_ms: _Optional[int] = ..., ages: _Optional[_Iterable[_Union[AgeBucket, _Mapping]]] = ..., coalesced: _Optional[int] = ..., partial: _Optional[int] = ..., complete: _Optional[int] = ..., oldest_partial_at_ms: _Optional[int] = ..., replicas: _Optional[int] = ...) -> None: ...

class AgeBucket(_message.Message):
    __slots__ = ("le", "count")
    LE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    le: str
    count: int
    def __init__(self, le: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ListFlowsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FlowInput(_message.Message):
    __slots__ = ("name", "value_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_type: ValueType
    def __init__(self, name: _Optional[str] = ..., value_type: _Optional[_Union[ValueType, str]] = ...) -> None: ...

class FlowInfo(_message.Message):
    __slots__ = ("name", "version", "inputs", "output", "batchable", "description", "params", "entity_types", "live_workers", "models", "queued", "slots", "tenant_queued")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    BATCHABLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPES_FIELD_NUMBER: _ClassVar[int]
    LIVE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    TENANT_QUEUED_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    inputs: _containers.RepeatedCompositeFieldContainer[FlowInput]
    output: ValueType
    batchable: bool
    description: str
    params: _containers.RepeatedScalarFieldContainer[str]
    entity_types: _containers.RepeatedScalarFieldContainer[str]
    live_workers: int
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    queued: int
    slots: int
    tenant_queued: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[FlowInput, _Mapping]]] = ..., output: _Optional[_Union[ValueType, str]] = ..., batchable: _Optional[bool] = ..., description: _Optional[str] = ..., params: _Optional[_Iterable[str]] = ..., entity_types: _Optional[_Iterable[str]] = ..., live_workers: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., queued: _Optional[int] = ..., slots: _Optional[int] = ..., tenant_queued: _Optional[int] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("worker", "name", "path", "sha256", "loaded", "load_ms", "loads")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    worker: str
    name: str
    path: str
    sha256: str
    loaded: bool
    load_ms: int
    loads: int
    def __init__(self, worker: _Optional[str] = ..., name: _Optional[str] = ..., path: _Optional[str] = ..., sha256: _Optional[str] = ..., loaded: _Optional[bool] = ..., load_ms: _Optional[int] = ..., loads: _Optional[int] = ...) -> None: ...

class ListFlowsResponse(_message.Message):
    __slots__ = ("flows",)
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[FlowInfo]
    def __init__(self, flows: _Optional[_Iterable[_Union[FlowInfo, _Mapping]]] = ...) -> None: ...

class EntityRequest(_message.Message):
    __slots__ = ("entity_id", "inputs")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    inputs: _containers.MessageMap[str, Value]
    def __init__(self, entity_id: _Optional[str] = ..., inputs: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class GetFeaturesRequest(_message.Message):
    __slots__ = ("entities", "features", "mode", "wait_ms", "max_staleness_ms", "max_staleness_ms_by_feature", "allow_stale")
    class MaxStalenessMsByFeatureEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_BY_FEATURE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_STALE_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[EntityRequest]
    features: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    wait_ms: int
    max_staleness_ms: int
    max_staleness_ms_by_feature: _containers.ScalarMap[str, int]
    allow_stale: bool
    def __init__(self, entities: _Optional[_Iterable[_Union[EntityRequest, _Mapping]]] = ..., features: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., wait_ms: _Optional[int] = ..., max_staleness_ms: _Optional[int] = ..., max_staleness_ms_by_feature: _Optional[_Mapping[str, int]] = ..., allow_stale: _Optional[bool] = ...) -> None: ...

class FeatureResult(_message.Message):
    __slots__ = ("entity_id", "feature", "version", "status", "value", "computed_at_ms", "age_ms", "from_cache", "error", "attempts", "generation", "coverage")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    feature: str
    version: int
    status: Status
    value: Value
    computed_at_ms: int
    age_ms: int
    from_cache: bool
    error: str
    attempts: int
    generation: int
    coverage: Coverage
    def __init__(self, entity_id: _Optional[str] = ..., feature: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., computed_at_ms: _Optional[int] = ..., age_ms: _Optional[int] = ..., from_cache: _Optional[bool] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., generation: _Optional[int] = ..., coverage: _Optional[_Union[Coverage, _Mapping]] = ...) -> None: ...

class Coverage(_message.Message):
    __slots__ = ("resolved", "total", "missing")
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    resolved: int
    total: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resolved: _Optional[int] = ..., total: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class GetFeaturesResponse(_message.Message):
    __slots__ = ("results", "ticket", "canceled")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    CANCELED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FeatureResult]
    ticket: str
    canceled: bool
    def __init__(self, results: _Optional[_Iterable[_Union[FeatureResult, _Mapping]]] = ..., ticket: _Optional[str] = ..., canceled: _Optional[bool] = ...) -> None: ...

class GetTicketRequest(_message.Message):
    __slots__ = ("ticket",)
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    def __init__(self, ticket: _Optional[str] = ...) -> None: ...

class WatchFeaturesRequest(_message.Message):
    __slots__ = ("request", "ticket", "wait_ms")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    request: GetFeaturesRequest
    ticket: str
    wait_ms: int
    def __init__(self, request: _Optional[_Union[GetFeaturesRequest, _Mapping]] = ..., ticket: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("result", "ticket")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    result: FeatureResult
    ticket: str
    def __init__(self, result: _Optional[_Union[FeatureResult, _Mapping]] = ..., ticket: _Optional[str] = ...) -> None: ...

class InvalidateRequest(_message.Message):
    __slots__ = ("feature", "entity_id")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    feature: str
    entity_id: str
    def __init__(self, feature: _Optional[str] = ..., entity_id: _Optional[str] = ...) -> None: ...

class InvalidateResponse(_message.Message):
    __slots__ = ("invalidated",)
    INVALIDATED_FIELD_NUMBER: _ClassVar[int]
    invalidated: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, invalidated: _Optional[_Iterable[str]] = ...) -> None: ...

class DeadLetterInfo(_message.Message):
    __slots__ = ("id", "entity_id", "feature", "flow", "error", "attempts", "planned_at_ms", "failed_at_ms", "value_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PLANNED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    entity_id: str
    feature: str
    flow: str
    error: str
    attempts: int
    planned_at_ms: int
    failed_at_ms: int
    value_key: str
    def __init__(self, id: _Optional[str] = ..., entity_id: _Optional[str] = ..., feature: _Optional[str] = ..., flow: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., planned_at_ms: _Optional[int] = ..., failed_at_ms: _Optional[int] = ..., value_key: _Optional[str] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "total")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetterInfo]
    total: int
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetterInfo, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class ReplayDeadLetterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ReplayDeadLetterResponse(_message.Message):
    __slots__ = ("enqueued",)
    ENQUEUED_FIELD_NUMBER: _ClassVar[int]
    enqueued: bool
    def __init__(self, enqueued: _Optional[bool] = ...) -> None: ...

class PurgeDeadLettersRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class PurgeDeadLettersResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class PutInputsRequest(_message.Message):
    __slots__ = ("entities",)
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[EntityRequest]
    def __init__(self, entities: _Optional[_Iterable[_Union[EntityRequest, _Mapping]]] = ...) -> None: ...

class PutInputsResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    def __init__(self, stored: _Optional[int] = ...) -> None: ...

class CancelTicketRequest(_message.Message):
    __slots__ = ("ticket",)
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    def __init__(self, ticket: _Optional[str] = ...) -> None: ...

class CancelTicketResponse(_message.Message):
    __slots__ = ("dropped", "kept", "already_complete", "finished")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    dropped: int
    kept: int
    already_complete: bool
    finished: int
    def __init__(self, dropped: _Optional[int] = ..., kept: _Optional[int] = ..., already_complete: _Optional[bool] = ..., finished: _Optional[int] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("kind", "tenant", "entity_id", "feature", "version", "lineage_hash", "value_key", "status", "value", "error", "attempts", "computed_at_ms", "planned_at_ms", "inputs", "dependencies", "tickets", "coverage")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[LogRecord.Kind]
        KIND_VALUE: _ClassVar[LogRecord.Kind]
        KIND_INPUTS: _ClassVar[LogRecord.Kind]
    KIND_UNSPECIFIED: LogRecord.Kind
    KIND_VALUE: LogRecord.Kind
    KIND_INPUTS: LogRecord.Kind
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    class DependenciesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    VALUE_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PLANNED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    TICKETS_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    kind: LogRecord.Kind
    tenant: str
    entity_id: str
    feature: str
    version: int
    lineage_hash: str
    value_key: str
    status: Status
    value: Value
    error: str
    attempts: int
    computed_at_ms: int
    planned_at_ms: int
    inputs: _containers.MessageMap[str, Value]
    dependencies: _containers.ScalarMap[str, str]
    tickets: _containers.RepeatedScalarFieldContainer[str]
    coverage: Coverage
    def __init__(self, kind: _Optional[_Union[LogRecord.Kind, str]] = ..., tenant: _Optional[str] = ..., entity_id: _Optional[str] = ..., feature: _Optional[str] = ..., version: _Optional[int] = ..., lineage_hash: _Optional[str] = ..., value_key: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., computed_at_ms: _Optional[int] = ..., planned_at_ms: _Optional[int] = ..., inputs: _Optional[_Mapping[str, Value]] = ..., dependencies: _Optional[_Mapping[str, str]] = ..., tickets: _Optional[_Iterable[str]] = ..., coverage: _Optional[_Union[Coverage, _Mapping]] = ...) -> None: ...

class LogEvent(_message.Message):
    __slots__ = ("sequence", "record")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    record: LogRecord
    def __init__(self, sequence: _Optional[int] = ..., record: _Optional[_Union[LogRecord, _Mapping]] = ...) -> None: ...

class SubscribeEventsRequest(_message.Message):
    __slots__ = ("features", "entity_ids", "after_sequence", "include_inputs")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INPUTS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    entity_ids: _containers.RepeatedScalarFieldContainer[str]
    after_sequence: int
    include_inputs: bool
    def __init__(self, features: _Optional[_Iterable[str]] = ..., entity_ids: _Optional[_Iterable[str]] = ..., after_sequence: _Optional[int] = ..., include_inputs: _Optional[bool] = ...) -> None: ...

class ReadLogRequest(_message.Message):
    __slots__ = ("features", "entity_ids", "from_ms", "to_ms", "include_inputs")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    FROM_MS_FIELD_NUMBER: _ClassVar[int]
    TO_MS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INPUTS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    entity_ids: _containers.RepeatedScalarFieldContainer[str]
    from_ms: int
    to_ms: int
    include_inputs: bool
    def __init__(self, features: _Optional[_Iterable[str]] = ..., entity_ids: _Optional[_Iterable[str]] = ..., from_ms: _Optional[int] = ..., to_ms: _Optional[int] = ..., include_inputs: _Optional[bool] = ...) -> None: ...

class StartBackfillRequest(_message.Message):
    __slots__ = ("features", "entities", "max_staleness_ms", "stage", "every_ms", "schedule")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EVERY_MS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    entities: _containers.RepeatedCompositeFieldContainer[EntityRequest]
    max_staleness_ms: int
    stage: bool
    every_ms: int
    schedule: str
    def __init__(self, features: _Optional[_Iterable[str]] = ..., entities: _Optional[_Iterable[_Union[EntityRequest, _Mapping]]] = ..., max_staleness_ms: _Optional[int] = ..., stage: _Optional[bool] = ..., every_ms: _Optional[int] = ..., schedule: _Optional[str] = ...) -> None: ...

class Backfill(_message.Message):
    __slots__ = ("id", "state", "features", "entities", "total", "done", "failed", "skipped", "rate", "eta_ms", "created_at_ms", "finished_at_ms", "runner", "max_staleness_ms", "staged", "schedule")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    ETA_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RUNNER_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    STAGED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: BackfillState
    features: _containers.RepeatedScalarFieldContainer[str]
    entities: int
    total: int
    done: int
    failed: int
    skipped: int
    rate: float
    eta_ms: int
    created_at_ms: int
    finished_at_ms: int
    runner: str
    max_staleness_ms: int
    staged: _containers.RepeatedCompositeFieldContainer[StagedGeneration]
    schedule: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[BackfillState, str]] = ..., features: _Optional[_Iterable[str]] = ..., entities: _Optional[int] = ..., total: _Optional[int] = ..., done: _Optional[int] = ..., failed: _Optional[int] = ..., skipped: _Optional[int] = ..., rate: _Optional[float] = ..., eta_ms: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., runner: _Optional[str] = ..., max_staleness_ms: _Optional[int] = ..., staged: _Optional[_Iterable[_Union[StagedGeneration, _Mapping]]] = ..., schedule: _Optional[str] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("name", "features", "max_staleness_ms", "stage", "every_ms", "entities", "created_at_ms", "next_run_ms", "runs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EVERY_MS_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_MS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    features: _containers.RepeatedScalarFieldContainer[str]
    max_staleness_ms: int
    stage: bool
    every_ms: int
    entities: int
    created_at_ms: int
    next_run_ms: int
    runs: _containers.RepeatedCompositeFieldContainer[ScheduleRun]
    def __init__(self, name: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., max_staleness_ms: _Optional[int] = ..., stage: _Optional[bool] = ..., every_ms: _Optional[int] = ..., entities: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., next_run_ms: _Optional[int] = ..., runs: _Optional[_Iterable[_Union[ScheduleRun, _Mapping]]] = ...) -> None: ...

class ScheduleRun(_message.Message):
    __slots__ = ("backfill_id", "started_at_ms", "note", "backfill", "generations")
    BACKFILL_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    backfill_id: str
    started_at_ms: int
    note: str
    backfill: Backfill
    generations: _containers.RepeatedCompositeFieldContainer[Generation]
    def __init__(self, backfill_id: _Optional[str] = ..., started_at_ms: _Optional[int] = ..., note: _Optional[str] = ..., backfill: _Optional[_Union[Backfill, _Mapping]] = ..., generations: _Optional[_Iterable[_Union[Generation, _Mapping]]] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ...) -> None: ...

class DeleteScheduleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StagedGeneration(_message.Message):
    __slots__ = ("feature", "version", "generation")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    feature: str
    version: int
    generation: int
    def __init__(self, feature: _Optional[str] = ..., version: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class GetPublishStatusRequest(_message.Message):
    __slots__ = ("feature",)
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    def __init__(self, feature: _Optional[str] = ...) -> None: ...

class PublishStatus(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeaturePublish]
    def __init__(self, features: _Optional[_Iterable[_Union[FeaturePublish, _Mapping]]] = ...) -> None: ...

class FeaturePublish(_message.Message):
    __slots__ = ("feature", "version", "published", "generations")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    version: int
    published: int
    generations: _containers.RepeatedCompositeFieldContainer[Generation]
    def __init__(self, feature: _Optional[str] = ..., version: _Optional[int] = ..., published: _Optional[int] = ..., generations: _Optional[_Iterable[_Union[Generation, _Mapping]]] = ...) -> None: ...

class Generation(_message.Message):
    __slots__ = ("generation", "state", "backfill_id", "rows", "failed", "created_at_ms", "decided_at_ms", "checks", "reason")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    generation: int
    state: GenerationState
    backfill_id: str
    rows: int
    failed: int
    created_at_ms: int
    decided_at_ms: int
    checks: _containers.RepeatedCompositeFieldContainer[GateCheck]
    reason: str
    def __init__(self, generation: _Optional[int] = ..., state: _Optional[_Union[GenerationState, str]] = ..., backfill_id: _Optional[str] = ..., rows: _Optional[int] = ..., failed: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., decided_at_ms: _Optional[int] = ..., checks: _Optional[_Iterable[_Union[GateCheck, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class GateCheck(_message.Message):
    __slots__ = ("name", "value", "threshold", "passed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    threshold: float
    passed: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., passed: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("feature", "to")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    feature: str
    to: int
    def __init__(self, feature: _Optional[str] = ..., to: _Optional[int] = ...) -> None: ...

class GetBackfillRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListBackfillsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackfillsResponse(_message.Message):
    __slots__ = ("backfills",)
    BACKFILLS_FIELD_NUMBER: _ClassVar[int]
    backfills: _containers.RepeatedCompositeFieldContainer[Backfill]
    def __init__(self, backfills: _Optional[_Iterable[_Union[Backfill, _Mapping]]] = ...) -> None: ...

class CancelBackfillRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
