#!/usr/bin/env bash
# One call on a lent GPU machine (see README, "Running the full tier in parts").
#
#   here:   bash tools/device_part.sh prepare        # splits the two npz files into .data/parts/ (ignored)
#   device: HARNESS_COMMIT=<sha> bash tools/device_part.sh K SECONDS [pytest args...]
#
# Call K (1, 2, 3) carries .data/parts/part.K and keeps it in /tmp/parts; the call that finds all
# three joins them, checks the sha256 and unpacks the data into /tmp/data. Every call installs the
# project, seeds the run cache /tmp/runs from the committed exports (reports/full/parts: finished
# runs are not trained again) and then, with the data in place, trains pending full-tier claims
# for at most SECONDS (--time-budget), exports the cache's results to $OUT/part.tar.gz (volumes
# part-2.tar.gz, ... past 15 MiB) and leaves
# the report and the log in $OUT. Without the data yet, it runs the CUDA tests and the benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = prepare ]; then
  mkdir -p .data/parts && rm -f .data/parts/*
  tar -cf .data/parts/data.tar -C ../shared/data mnist.npz cifar10.npz
  sha256sum .data/parts/data.tar | cut -d' ' -f1 > .data/parts/SHA256
  split -n 3 -d -a 1 .data/parts/data.tar .data/parts/part. && rm .data/parts/data.tar
  for i in 2 1 0; do mv ".data/parts/part.$i" ".data/parts/part.$((i + 1))"; done
  ls -l .data/parts
  exit 0
fi
k=${1:?call number}; budget=${2:?seconds}; shift 2
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/parts /tmp/runs
exec > >(tee -a "$out/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cp .data/parts/part."$k" .data/parts/SHA256 /tmp/parts/ 2>/dev/null
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
for p in reports/full/parts/*.tar.gz; do tar -xzf "$p" -C /tmp/runs; done
python3 -m harness migrate --run-cache /tmp/runs >/dev/null  # entries made when run keys named the device
if [ ! -f /tmp/data/cifar10.npz ] && [ -f /tmp/parts/part.1 ] && [ -f /tmp/parts/part.2 ] && [ -f /tmp/parts/part.3 ]; then
  cat /tmp/parts/part.1 /tmp/parts/part.2 /tmp/parts/part.3 > /tmp/data.tar
  if [ "$(sha256sum /tmp/data.tar | cut -d' ' -f1)" = "$(cat /tmp/parts/SHA256)" ]; then
    mkdir -p /tmp/data && tar -xf /tmp/data.tar -C /tmp/data && rm /tmp/data.tar && echo "data: sha256 ok"
  else
    echo "data: sha256 MISMATCH, not used" && rm /tmp/data.tar
  fi
fi
if [ ! -f /tmp/data/cifar10.npz ]; then
  timeout "$budget" python3 -m pytest tests/test_graphs.py -q
  timeout "$budget" python3 -m harness bench --device cuda --steps 50
  exit 0
fi
python3 -m pytest claims -m full --gpu --run-cache /tmp/runs --data-dir /tmp/data --time-budget "$budget" \
  --report "$out/report" -q "$@"
python3 -m harness export --run-cache /tmp/runs --out "$out/part.tar.gz" --max-mib 15  # volumes part.tar.gz, part-2.tar.gz, ...: a lent device returns files of at most 16 MiB
