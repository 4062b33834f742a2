"""Errors of the client: one exception class per gRPC status code, with the server's message.

Every call raises a subclass of :class:`FstoreError`; the server's message says what was
wrong and what to do. Catch the base class, or the code you can act on::

    try:
        client.get_features(["u1"], ["user.score"])
    except fstore_client.ResourceExhausted as e:
        time.sleep(e.retry_after or 1.0)
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Type

import grpc


class FstoreError(Exception):
    """A call the feature store refused or could not answer."""

    #: The gRPC status code.
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        #: The server's message.
        self.message = message
        #: Seconds to wait before retrying, when the server said (quotas, a full queue).
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Cancelled(FstoreError):
    code = grpc.StatusCode.CANCELLED


class Unknown(FstoreError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(FstoreError):
    """The request is malformed: an unknown feature, a bad input, a value out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(FstoreError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(FstoreError):
    """An unknown feature, ticket, backfill, dead letter or key."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FstoreError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(FstoreError):
    """The API key lacks the role the call needs, or names another tenant."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(FstoreError):
    """Over a quota or a limit; :attr:`retry_after` says when to try again if known."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(FstoreError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(FstoreError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(FstoreError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(FstoreError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(FstoreError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(FstoreError):
    """The server or its backend cannot be reached now; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(FstoreError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(FstoreError):
    """No API key, or one the server does not know (revoked, mistyped)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class StillPending(DeadlineExceeded):
    """:meth:`Client.wait` ran out of time: :attr:`pending` names what is not final yet.

    The ticket stays valid: wait again, fetch it later, or cancel it.
    """

    def __init__(self, ticket: str, pending: Sequence[Tuple[str, str]], waited: float) -> None:
        names = ", ".join(f"{f} of {e}" for e, f in pending[:5])
        more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
        super().__init__(
            f"ticket {ticket} still has {len(pending)} pending after {waited:.1f} s "
            f"({names}{more}); wait again, fetch it later or cancel it"
        )
        #: The ticket waited on.
        self.ticket = ticket
        #: (entity id, feature) of each result not final yet.
        self.pending = list(pending)


_BY_CODE: Dict[grpc.StatusCode, Type[FstoreError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def _retry_after(metadata: object) -> Optional[float]:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "retry-after-ms":
            try:
                return int(value) / 1000.0
            except (TypeError, ValueError):
                return None
    return None


def from_status(code: grpc.StatusCode, details: Optional[str], trailing: object = None) -> FstoreError:
    """The exception for a gRPC status (what a refused call raises)."""
    cls = _BY_CODE.get(code, Unknown)
    return cls(details or code.name.lower(), retry_after=_retry_after(trailing))


def from_rpc_error(error: grpc.RpcError) -> FstoreError:
    """The exception for an error raised by grpcio (sync or asyncio)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return from_status(code, details, trailing)
