#!/usr/bin/env bash
# The chaos run: real processes on loopback — a 3-node JetStream cluster (R3), 2 `fstore
# serve` replicas and `fstore worker`s with API keys of two tenants, each process behind
# its own proxy to every NATS node — under a mixed load while seeded faults kill, restart,
# stop, cut and slow them; then the invariants (nothing lost, values equal the reference,
# only poison fails and dead-letters, one event per logged value, no duplicate computes).
#
#   benches/chaos.sh                          # 60 s (CHAOS_SECS=60), a random seed, printed
#   CHAOS_SEED=1234 CHAOS_SECS=60 benches/chaos.sh   # replay a run
#   CHAOS_LOG_DIR=/tmp/chaos benches/chaos.sh        # keep the process logs there
#
# Every CHAOS_* variable of benches/benches/chaos/main.rs passes through. Installs the
# pinned nats-server unless NATS_SERVER_BIN is set, and builds the release `fstore`
# binary the bench starts.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fstore-target}"
export CHAOS_SECS="${CHAOS_SECS:-60}"
if [ -z "${NATS_SERVER_BIN:-}" ]; then
  NATS_SERVER_BIN="$(scripts/install-nats)"
  export NATS_SERVER_BIN
fi
# `cargo bench` builds in the release directory and looks for `fstore` beside it.
cargo build --release -p fstore --bin fstore
export FSTORE_BIN="${FSTORE_BIN:-$CARGO_TARGET_DIR/release/fstore}"
exec cargo bench -p fstore-benches --bench chaos "$@"
