#!/usr/bin/env bash
# The soak at full length: a bounded mixed run (hits, misses, dependencies, failures,
# invalidations, SYNC waits) over 2 `fstore serve` replicas and 2 `fstore worker`
# processes on one nats-server, checking that no call is lost and that every fstore
# process's RSS at the end is within 20% of its RSS after warm-up.
#
#   benches/soak.sh                  # 5 minutes (SOAK_SECS=300), the full length
#   SOAK_SECS=60 benches/soak.sh     # shorter, e.g. in CI
#
# Every SOAK_* variable of benches/benches/soak/main.rs passes through (SOAK_CLIENTS,
# SOAK_WARMUP_SECS, SOAK_LOG_DIR, ...). Installs the pinned nats-server unless
# NATS_SERVER_BIN is set, and builds the release `fstore` binary the bench starts.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fstore-target}"
export SOAK_SECS="${SOAK_SECS:-300}"
if [ -z "${NATS_SERVER_BIN:-}" ]; then
  NATS_SERVER_BIN="$(scripts/install-nats)"
  export NATS_SERVER_BIN
fi
# `cargo bench` builds in the release directory and looks for `fstore` beside it.
cargo build --release -p fstore --bin fstore
export FSTORE_BIN="${FSTORE_BIN:-$CARGO_TARGET_DIR/release/fstore}"
exec cargo bench -p fstore-benches --bench soak "$@"
