#!/usr/bin/env bash
# Copy the regenerated pictures that the docs show from results/ into docs/assets/ (results/ holds the data:
# JSON, CSV and tables; docs/ holds only what its pages link to). Run after scripts/fmnist_study.sh,
# `elt eval ... --out results/eval/...` or `elt bench scaling --out results/benchmarks`; a picture that
# was not regenerated is left as it is.
#
#   scripts/docs_assets.sh
set -euo pipefail
cd "$(dirname "$0")/.."
while read -r source target; do
  if [ -e "$source" ]; then cp "$source" "docs/assets/$target" && echo "$source -> docs/assets/$target"; fi
done <<'MAP'
results/masked/eval.png study_masked_eval.png
results/diffusion/eval.png study_diffusion_eval.png
results/ablations/diffusion/eval.png ablations_diffusion_eval.png
results/ablations/diffusion/width_ladder.png ablations_diffusion_width_ladder.png
results/ablations/masked/eval.png ablations_masked_eval.png
results/ablations/masked/guided/eval.png ablations_masked_guided_eval.png
results/ablations/masked/long2/eval.png ablations_masked_long2_eval.png
results/eval/masked/eval.png eval_masked.png
results/eval/diffusion/eval.png eval_diffusion.png
results/benchmarks/scaling_diffusion.png scaling_diffusion.png
results/benchmarks/scaling_masked.png scaling_masked.png
MAP
