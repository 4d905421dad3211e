#!/usr/bin/env bash
# Train the repaired-spectral study: uniform, saln and each new model-free selector at filter
# ratios 0.5, 0.8 and 0.9, without and with coverage, SEEDS seeds (5 on the CIFAR-10 slice, 3
# on the full sets). Each sweep resumes where a killed one stopped; RATIOS (default 0.5,0.8,0.9)
# narrows it, e.g. to the goal's ratio 0.8 first.
#   bash tools/spectral_study.sh CONFIG ROOT SEEDS [RATIOS]
#   e.g. bash tools/spectral_study.sh cifar10_full_cpu runs/spectral_c10 0,1,2 0.8
set -euo pipefail
config=$1
root=$2
seeds=$3
ratios=${4:-0.5,0.8,0.9}
methods=uniform,saln,spectral,spectral_strata,class_stratified
sweep() { saln sweep --config "$config" --ratios "$ratios" --seeds "$seeds" --no-progress "$@"; }
sweep --methods "standard,$methods" --out "$root/plain"
sweep --methods "$methods" --set train.coverage=true --out "$root/coverage"
