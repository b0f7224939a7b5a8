#!/usr/bin/env bash
# The README's main command: installs Fashion-MNIST from Debian where it can, builds selfsup,
# and runs `selfsup quickstart` (SimCLR pretraining + few-label evaluation against baselines).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=/usr/share/datasets/fashion-mnist
if [ ! -d "$DATA" ] && [[ " $* " != *" --data "* ]]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  else
    echo "Fashion-MNIST is not installed: run 'apt-get install dataset-fashion-mnist' as root," >&2
    echo "or pass the folder with the IDX files: scripts/quickstart.sh --data DIR" >&2
    exit 2
  fi
fi
cargo build --release -q -p selfsup-cli
exec target/release/selfsup quickstart "$@"
