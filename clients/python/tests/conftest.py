"""Real servers for the client's tests: `fstore dev` (embedded substrate), and a
nats-server with `fstore serve --nats` and `fstore worker --nats` as separate processes,
API keys on. Started once per session on loopback ports the processes pick themselves,
and killed at the end.

Needs the `fstore` binary (FSTORE_BIN, else the debug build under CARGO_TARGET_DIR or
target/) and nats-server (NATS_SERVER_BIN); `scripts/test` provides both.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

import fstore_client

REPO = Path(__file__).resolve().parents[3]
#: How long a process may take to start.
START = 60.0


def fstore_binary() -> str:
    explicit = os.environ.get("FSTORE_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    candidate = target / "debug" / "fstore"
    if not candidate.exists():
        pytest.fail(f"no fstore binary at {candidate}: build it (cargo build -p fstore) or set FSTORE_BIN")
    return str(candidate)


def nats_binary() -> str:
    found = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")
    if not found:
        pytest.fail("nats-server not found: run scripts/install-nats and set NATS_SERVER_BIN to what it prints")
    return found


class Proc:
    """A child process whose output goes to a log file, killed (with its group) on stop."""

    def __init__(self, name: str, args: List[str], env: Dict[str, str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        self._file = open(self.log, "wb")
        self.popen = subprocess.Popen(
            args, stdout=self._file, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def reported(self, marker: str, timeout: float = START) -> str:
        """The first word after `marker` in the log, waited for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if marker in text:
                rest = text.split(marker, 1)[1].split()
                if rest:
                    return rest[0]
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before `{marker}`:\n{text[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not report `{marker}` within {timeout} s:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._file.close()


@dataclass
class Server:
    """A feature store to test against: its address and the key its calls need."""

    kind: str
    addr: str
    api_key: Optional[str]
    nats_url: Optional[str] = None

    def client(self, **kw: object) -> fstore_client.Client:
        return fstore_client.Client(self.addr, api_key=self.api_key, **kw)  # type: ignore[arg-type]

    def async_client(self, **kw: object) -> fstore_client.AsyncClient:
        return fstore_client.AsyncClient(self.addr, api_key=self.api_key, **kw)  # type: ignore[arg-type]


#: Short intervals, so that workers are seen and settle fast.
FAST = {
    "FSTORE_NATS__HEARTBEAT": "500ms",
    "FSTORE_WORKER__RETRY_BASE": "20ms",
    "FSTORE_LOG__MAX_BYTES": "268435456",
    "FSTORE_LOG": "info",
}


@pytest.fixture(scope="session")
def logs() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="fstore-py-"))
    yield d
    if os.environ.get("FSTORE_KEEP_LOGS") is None:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def dev(logs: Path) -> Iterator[Server]:
    # Its feature log in the session's directory, not the working directory.
    env = {**FAST, "FSTORE_LOG__DIR": str(logs / "dev-log")}
    p = Proc("dev", [fstore_binary(), "dev", "--listen", "127.0.0.1:0"], env, logs)
    try:
        url = p.reported("is listening on ")
        yield Server("dev", url, None)
    finally:
        p.stop()


@pytest.fixture(scope="session")
def on_nats(logs: Path) -> Iterator[Server]:
    store = logs / "jetstream"
    ports = logs / "ports"
    ports.mkdir()
    procs: List[Proc] = []
    try:
        nats = Proc("nats", [nats_binary(), "-js", "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", str(ports), "-sd", str(store)], {}, logs)
        procs.append(nats)
        url = _nats_url(nats, ports)
        made = subprocess.run(
            [fstore_binary(), "auth", "create-key", "--nats", url, "--for", "acme", "--role", "admin", "--role", "write", "--role", "read"],
            capture_output=True,
            text=True,
            env={**os.environ, **FAST},
            timeout=START,
        )
        if made.returncode != 0:
            raise RuntimeError(f"fstore auth create-key failed: {made.stderr}")
        key = made.stdout.strip()
        worker = Proc("worker", [fstore_binary(), "worker", "--nats", url], FAST, logs)
        procs.append(worker)
        serve = Proc("serve", [fstore_binary(), "serve", "--nats", url, "--listen", "127.0.0.1:0"], FAST, logs)
        procs.append(serve)
        addr = serve.reported("is listening on ")
        server = Server("nats", addr, key, nats_url=url)
        _until_flows_are_served(server)
        yield server
    finally:
        for p in reversed(procs):
            p.stop()


def _nats_url(nats: Proc, ports: Path) -> str:
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        for f in ports.glob("*.ports"):
            try:
                return json.loads(f.read_text())["nats"][0]
            except (ValueError, KeyError, IndexError):
                pass
        if nats.popen.poll() is not None:
            raise RuntimeError(f"nats-server exited:\n{nats.text()[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError("nats-server wrote no ports file")


def _until_flows_are_served(server: Server) -> None:
    """Waits for the worker's first heartbeat (registrations need a live worker)."""
    deadline = time.monotonic() + START
    with server.client() as c:
        while time.monotonic() < deadline:
            try:
                if any(f.name == "text.stats" and f.live_workers > 0 for f in c.list_flows()):
                    return
            except fstore_client.FstoreError:
                pass
            time.sleep(0.1)
    raise RuntimeError("no worker advertised its flows")


@pytest.fixture(params=["dev", "nats"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each test that takes it runs on both backends."""
    return request.getfixturevalue("dev" if request.param == "dev" else "on_nats")


_counter = iter(range(1_000_000))


@pytest.fixture
def unique() -> str:
    """A name no other test uses (features are registered per server, for the session)."""
    return f"t{os.getpid()}x{next(_counter)}"
