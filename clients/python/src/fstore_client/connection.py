"""Where the server is and how to reach it: address, TLS and credentials, shared by both
clients. Reads the same environment variables as the ``fstore`` CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import grpc

DEFAULT_ADDR = "127.0.0.1:50051"

#: TLS: off (``None``/``False``), on with the system's roots (``True``), on with a CA file
#: (a path), or :class:`Tls` for a client certificate too.
TlsSetting = Union[None, bool, str, Path, "Tls"]


@dataclass(frozen=True)
class Tls:
    """TLS towards the server: the CA that signed its certificate (the system's roots when
    absent) and, for servers that verify clients (mTLS), a client certificate and key."""

    ca: Optional[Union[str, Path]] = None
    cert: Optional[Union[str, Path]] = None
    key: Optional[Union[str, Path]] = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA"),
            private_key=_read(self.key, "client key"),
            certificate_chain=_read(self.cert, "client certificate"),
        )


def _read(path: Optional[Union[str, Path]], what: str) -> Optional[bytes]:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the {what} at {path}: {e.strerror}") from None


@dataclass(frozen=True)
class Target:
    """A resolved connection: host:port, TLS credentials if any, and call metadata."""

    host: str
    credentials: Optional[grpc.ChannelCredentials]
    metadata: Tuple[Tuple[str, str], ...]


def resolve(addr: str, api_key: Optional[str], tenant: Optional[str], tls: TlsSetting) -> Target:
    """``addr`` is ``host:port``, ``http://host:port`` or ``https://host:port`` (TLS on)."""
    host = addr
    scheme_tls = False
    if "://" in addr:
        scheme, host = addr.split("://", 1)
        if scheme not in ("http", "https"):
            raise ValueError(f"address {addr!r}: the scheme must be http or https")
        scheme_tls = scheme == "https"
    host = host.rstrip("/")
    if ":" not in host:
        raise ValueError(f"address {addr!r} needs a port, e.g. {DEFAULT_ADDR}")
    setting: Optional[Tls]
    if tls is None or tls is False:
        setting = Tls() if scheme_tls else None
    elif tls is True:
        setting = Tls()
    elif isinstance(tls, Tls):
        setting = tls
    else:
        setting = Tls(ca=tls)
    metadata: List[Tuple[str, str]] = []
    if api_key:
        metadata.append(("authorization", f"Bearer {api_key}"))
    if tenant:
        metadata.append(("x-fstore-tenant", tenant))
    return Target(host, setting.credentials() if setting else None, tuple(metadata))


def from_env() -> dict:
    """Connection settings from ``FSTORE_ADDR``, ``FSTORE_API_KEY``, ``FSTORE_TENANT``,
    ``FSTORE_TLS_CA``, ``FSTORE_TLS_CERT`` and ``FSTORE_TLS_KEY``, as the CLI reads them."""
    ca, cert, key = (os.environ.get(f"FSTORE_TLS_{k}") or None for k in ("CA", "CERT", "KEY"))
    tls: TlsSetting = Tls(ca=ca, cert=cert, key=key) if (ca or cert or key) else None
    return {
        "addr": os.environ.get("FSTORE_ADDR") or DEFAULT_ADDR,
        "api_key": os.environ.get("FSTORE_API_KEY") or None,
        "tenant": os.environ.get("FSTORE_TENANT") or None,
        "tls": tls,
    }


#: Messages up to 64 MiB each way (the server enforces its own `limits.max_request_bytes`).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
