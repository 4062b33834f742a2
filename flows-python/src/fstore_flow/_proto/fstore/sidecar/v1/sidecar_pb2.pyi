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
VALUE_TYPE_UNSPECIFIED: ValueType
VALUE_TYPE_F64: ValueType
VALUE_TYPE_I64: ValueType
VALUE_TYPE_BOOL: ValueType
VALUE_TYPE_STRING: ValueType
VALUE_TYPE_BYTES: ValueType
VALUE_TYPE_TENSOR: ValueType

class ToSidecar(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: Batch
    def __init__(self, batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...

class FromSidecar(_message.Message):
    __slots__ = ("hello", "results")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    results: Results
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., results: _Optional[_Union[Results, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol", "flows")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    flows: _containers.RepeatedCompositeFieldContainer[Spec]
    def __init__(self, protocol: _Optional[int] = ..., flows: _Optional[_Iterable[_Union[Spec, _Mapping]]] = ...) -> None: ...

class Spec(_message.Message):
    __slots__ = ("name", "version", "description", "inputs", "output", "params", "batchable", "entity_types")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    BATCHABLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    description: str
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    output: ValueType
    params: _containers.RepeatedCompositeFieldContainer[Param]
    batchable: bool
    entity_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., description: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., output: _Optional[_Union[ValueType, str]] = ..., params: _Optional[_Iterable[_Union[Param, _Mapping]]] = ..., batchable: _Optional[bool] = ..., entity_types: _Optional[_Iterable[str]] = ...) -> None: ...

class Input(_message.Message):
    __slots__ = ("name", "value_type", "optional")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_type: ValueType
    optional: bool
    def __init__(self, name: _Optional[str] = ..., value_type: _Optional[_Union[ValueType, str]] = ..., optional: _Optional[bool] = ...) -> None: ...

class Param(_message.Message):
    __slots__ = ("name", "default", "doc")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    name: str
    default: str
    doc: str
    def __init__(self, name: _Optional[str] = ..., default: _Optional[str] = ..., doc: _Optional[str] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("f64", "i64", "bool", "string", "bytes", "tensor")
    F64_FIELD_NUMBER: _ClassVar[int]
    I64_FIELD_NUMBER: _ClassVar[int]
    BOOL_FIELD_NUMBER: _ClassVar[int]
    STRING_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    f64: float
    i64: int
    bool: bool
    string: str
    bytes: bytes
    tensor: Tensor
    def __init__(self, f64: _Optional[float] = ..., i64: _Optional[int] = ..., bool: _Optional[bool] = ..., string: _Optional[str] = ..., bytes: _Optional[bytes] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[_Iterable[float]] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("id", "flow", "version", "items")
    ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    id: int
    flow: str
    version: int
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, id: _Optional[int] = ..., flow: _Optional[str] = ..., version: _Optional[int] = ..., items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("entity_id", "params", "values", "attempt")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    params: _containers.ScalarMap[str, str]
    values: _containers.MessageMap[str, Value]
    attempt: int
    def __init__(self, entity_id: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., values: _Optional[_Mapping[str, Value]] = ..., attempt: _Optional[int] = ...) -> None: ...

class Results(_message.Message):
    __slots__ = ("id", "results")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("value", "error")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    value: Value
    error: Error
    def __init__(self, value: _Optional[_Union[Value, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("message", "transient")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRANSIENT_FIELD_NUMBER: _ClassVar[int]
    message: str
    transient: bool
    def __init__(self, message: _Optional[str] = ..., transient: _Optional[bool] = ...) -> None: ...
