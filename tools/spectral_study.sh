#!/usr/bin/env bash
# Train the repaired-spectral study: uniform, saln and each new model-free selector at filter
# ratios 0.5, 0.8 and 0.9, without and with coverage, SEEDS seeds (5 on the CIFAR-10 slice, 3
# on the full sets). Each sweep resumes where a killed one stopped.
#   bash tools/spectral_study.sh CONFIG ROOT SEEDS   e.g. cifar10_full_cpu runs/spectral_c10 0,1,2
set -euo pipefail
config=$1
root=$2
seeds=$3
methods=uniform,saln,spectral,spectral_strata,class_stratified
sweep() { saln sweep --config "$config" --ratios 0.5,0.8,0.9 --seeds "$seeds" --no-progress "$@"; }
sweep --methods "standard,$methods" --out "$root/plain"
sweep --methods "$methods" --set train.coverage=true --out "$root/coverage"
