#!/usr/bin/env bash
# Candle against sentence-transformers on torch, side by side in one run: the batching
# bench's part A (`SentenceTransformer::run` over all-MiniLM-L6-v2, batches of 1, 8 and 32
# of the same 64 sentences) with torch measured on the same batches right after each of
# candle's, both on RAYON_NUM_THREADS threads (default 2), then the ratio and the largest
# difference between the two embeddings.
#
#   benches/versus-torch.sh --install   # first time: makes .tools/torch-venv (~6 GB:
#                                       # PyPI's torch wheel carries CUDA libraries)
#   benches/versus-torch.sh             # then
#   MEDIAN_OF=3 BATCHING_SECS=10 benches/versus-torch.sh
#
# Every BATCHING_* variable of benches/benches/batching/main.rs passes through. Needs the
# model (scripts/fetch-model).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fstore-target}"
venv=.tools/torch-venv
req=benches/torch/requirements.txt
if [ "${1:-}" = "--install" ]; then
  shift
  if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --only-binary=:all: -r "$req"
    cp "$req" "$venv/.requirements"
  fi
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "no torch venv in $venv: run benches/versus-torch.sh --install first (installs $req)" >&2
  exit 1
fi
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
export BATCHING_PARTS="${BATCHING_PARTS:-flow}"
export BATCHING_TORCH="$(pwd)/$venv/bin/python"
exec cargo bench -p fstore-benches --bench batching "$@"
