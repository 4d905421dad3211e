#!/usr/bin/env bash
# Take what a GPU lease returned into the repository, then print the tables for the docs.
#
#   bash tools/gpu_ingest.sh FILES_AT [FILES_AT ...]
#
# FILES_AT: the folder the device tool put a call's $OUT files in (gpu_session.sh bench or
# compare). JSON results go to benchmarks/results/ (named by device, as the tables expect),
# the GPU test, graph-test, session and compare logs to benchmarks/results/gpu_logs/ stamped
# with the date and time, and a compare call's run archive replaces
# benchmarks/results/cifar10_gpu_runs.tar.xz (its jobs.json becomes compare_jobs_cuda.json,
# and each call's is kept in gpu_logs/). Review `git diff --stat`, then commit.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: gpu_ingest.sh FILES_AT [FILES_AT ...]" >&2; exit 2; }
RESULTS=benchmarks/results
STAMP=$(date -u +%F-%H%M)  # never overwrites an earlier lease's log
CALL=0
mkdir -p "$RESULTS/gpu_logs"
for from in "$@"; do
  [ -d "$from" ] || { echo "no such folder: $from" >&2; exit 2; }
  for json in "$from"/*.json; do
    [ -e "$json" ] && cp -v "$json" "$RESULTS/"
  done
  for log in gpu_tests graph_tests session compare; do
    [ -f "$from/$log.log" ] && cp -v "$from/$log.log" "$RESULTS/gpu_logs/${log}_$STAMP.log"
  done
  if [ -f "$from/cifar10_gpu_runs.tar.xz" ]; then
    cp -v "$from/cifar10_gpu_runs.tar.xz" "$RESULTS/cifar10_gpu_runs.tar.xz"
    python -c 'import sys, tarfile; sys.stdout.buffer.write(tarfile.open(sys.argv[1]).extractfile("jobs.json").read())' \
      "$RESULTS/cifar10_gpu_runs.tar.xz" > "$RESULTS/compare_jobs_cuda.json" ||
      echo "(no jobs.json in the archive)"
    # Each call's jobs, kept: the next call's jobs.json replaces compare_jobs_cuda.json.
    cp "$RESULTS/compare_jobs_cuda.json" "$RESULTS/gpu_logs/compare_jobs_${STAMP}_$((++CALL)).json"
  fi
done
python -m benchmarks.tables
