#!/usr/bin/env bash
# Train an InfoBatch study: standard, infobatch and standard_matched@infobatch; uniform and saln
# at the filter ratio that matches InfoBatch's measured examples; infobatch at prune ratios 0.3
# and 0.7. Three seeds each; every comparison resumes where a killed one stopped.
#   bash tools/infobatch_study.sh CONFIG ROOT      e.g. fashion_mnist_cpu runs/fmnist
#   python -m tools.infobatch_study ROOT docs/results/infobatch_NAME
set -euo pipefail
config=$1
root=$2
compare() { saln compare --config "$config" --seeds 0,1,2 --no-progress "$@"; }
compare --methods standard,infobatch,standard_matched@infobatch --out "$root/infobatch"
ratio=$(python - "$root/infobatch/runs" <<'PY'
import json, pathlib, sys
runs = pathlib.Path(sys.argv[1])
def examples(method):
    return sum(json.loads((runs / f"{method}-seed{s}" / "summary.json").read_text())
               ["examples_trained"] for s in range(3))
print(f"{1 - examples('infobatch') / examples('standard'):.3f}")
PY
)
echo "filter ratio matching InfoBatch's examples: $ratio"
compare --methods uniform --filter-ratio "$ratio" --out "$root/matched_ratio"
for prune in 0.3 0.7; do
  compare --methods infobatch,standard_matched@infobatch --set train.prune_ratio=$prune \
    --out "$root/prune$prune"
done
compare --methods uniform,saln --filter-ratio "$ratio" --out "$root/matched_ratio"
