"""Python client of fstore, the on-demand feature store.

    from fstore_client import Client

    client = Client.from_env()          # FSTORE_ADDR, FSTORE_API_KEY, FSTORE_TENANT, FSTORE_TLS_CA
    df = client.get_features(["u1", "u2"], ["user.score"], mode="sync", wait=2).to_pandas()

:class:`Client` blocks; :class:`AsyncClient` has the same methods for asyncio. Errors are
:class:`FstoreError` subclasses, one per gRPC code, carrying the server's message.
"""

from ._proto.featurestore.v1 import featurestore_pb2 as pb
from .aio import AsyncClient
from .client import Client
from .connection import Tls
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FstoreError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StillPending,
    Unauthenticated,
    Unavailable,
)
from .requests import feature, related, request
from .results import FeatureResults, FeatureValue
from .values import Relation

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FeatureResults",
    "FeatureValue",
    "FstoreError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Relation",
    "ResourceExhausted",
    "StillPending",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "feature",
    "pb",
    "related",
    "request",
]
