#!/usr/bin/env bash
# The four shipped demo models: demo:masked and demo:diffusion (ELT 3x4, ILSD) and demo:masked-vanilla and
# demo:diffusion-vanilla (the same configs with ilsd.mode=vanilla, teacher loss only). All four are the shipped
# Fashion-MNIST configs with model.input_injection=true (the setting that closed the iso-FLOP gap in
# docs/results.md), same steps, batch, seed and data. The masked models reuse the tokenizer of the shipped
# demo:masked (taken out of its checkpoint; trained by `elt tokenizer train fmnist_masked`), so all masked models
# see the same tokens and a retrain costs no tokenizer run.
#
#   scripts/demo_models.sh train [RUNS]           train the four (one thread each, two at a time; resumable)
#   scripts/demo_models.sh ship  [RUNS [NAME...]]  export them (or the NAMEs) as fp16 inference checkpoints
#                                                  into the package
#   scripts/demo_models.sh eval  [RUNS [NAME...]]  evaluate the shipped models (1000 class-balanced samples at
#                                                  each L = 1..5, their default sampling settings) into
#                                                  docs/results/shipped/, merged per paradigm, and draw the
#                                                  README's grids docs/<paradigm>_<ilsd|vanilla>_grid.png
#                                                  (L = 1..5, two samples per class)
#
# RUNS defaults to runs/demo. Diffusion trains in bf16 (about 3x faster on CPUs with AVX512-BF16). CPU time on a
# 2-core AMD EPYC: about 12 min per diffusion model, 40 min per masked model, about an hour in all (two lanes).
set -euo pipefail
ACTION=${1:?usage: $0 train|ship|eval [RUNS [NAME...]]}
RUNS=${2:-runs/demo}
PY=${PYTHON:-python}
ASSETS=src/elt/assets/demo
COMMON="model.input_injection=true train.threads=1"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
NAMES=${*:3}
NAMES=${NAMES:-masked masked-vanilla diffusion diffusion-vanilla}
mkdir -p "$RUNS"

train() {  # train NAME CONFIG OVERRIDES...: one run, skipped when RUNS/NAME/train.done exists
  local name=$1 config=$2
  shift 2
  [ -e "$RUNS/$name/train.done" ] && return 0
  "$PY" -m elt.cli train "$config" $COMMON "$@" train.out_dir="$RUNS/$name" --resume auto --no-progress \
    > "$RUNS/$name.log" 2>&1
  touch "$RUNS/$name/train.done"
}

case "$ACTION" in
train)
  if [ ! -f "$RUNS/tokenizer/tokenizer.json" ]; then
    "$PY" - "$RUNS/tokenizer" <<'PYEOF'
import sys
import elt
from elt.tokenizers import fsq
tokenizer = elt.load("demo:masked").tokenizer.float()
fsq.save_tokenizer(tokenizer, sys.argv[1], info={"source": "demo:masked (fp16 export of the ILSD demo model)"})
PYEOF
  fi
  masked="tokenizer.path=$RUNS/tokenizer"
  train masked fmnist_masked "$masked" &
  { train diffusion fmnist_diffusion train.precision=bf16
    train diffusion-vanilla fmnist_diffusion ilsd.mode=vanilla train.precision=bf16
    train masked-vanilla fmnist_masked ilsd.mode=vanilla "$masked"; } &
  wait
  ;;
ship)
  for name in $NAMES; do
    [ -e "$RUNS/$name/train.done" ] || { echo "$RUNS/$name is not trained; run: $0 train $RUNS" >&2; exit 2; }
  done
  for name in $NAMES; do
    out="$ASSETS/$name"
    stage="$ASSETS/.$name.new"
    rm -rf "$stage"
    "$PY" -m elt.cli export --ckpt "$RUNS/$name" --out "$stage"
    # the run's folders as relative paths (sampling never reads them), not this machine's
    sed -i "s#^  out_dir: .*#  out_dir: runs/$name#; s#^  path: .*tokenizer.*#  path: runs/masked_tokenizer#" \
      "$stage/config.yaml"
    rm -rf "$out.old"
    [ -e "$out" ] && mv "$out" "$out.old"
    mv "$stage" "$out" && rm -rf "$out.old"
    du -b "$out"/*
  done
  ;;
eval)
  OUT=docs/results/shipped
  for name in $NAMES; do
    paradigm=${name%-vanilla}
    mode=ILSD; [ "$name" != "$paradigm" ] && mode=vanilla
    dest=$OUT/$paradigm/runs/$name
    [ -e "$dest/eval.json" ] || "$PY" -m elt.cli --threads 1 eval --ckpt "demo:$name" --loops 1-5 --num 1000 \
      --batch-size 250 --name "demo:$name (ELT 3x4 $mode, input injection)" --out "$dest" --no-progress
    grids=$RUNS/grids/$name
    [ -e "$grids/grid.png" ] || "$PY" -m elt.cli --threads 1 sample --ckpt "demo:$name" --loops 1,2,3,4,5 --num 20 \
      --out "$grids" --no-progress
    cp "$grids/grid.png" "docs/${paradigm}_${mode,,}_grid.png"
  done
  for paradigm in masked diffusion; do
    [ -e "$OUT/$paradigm/runs/$paradigm/eval.json" ] && [ -e "$OUT/$paradigm/runs/$paradigm-vanilla/eval.json" ] &&
      "$PY" -m elt.cli eval merge "$OUT/$paradigm/runs/$paradigm" "$OUT/$paradigm/runs/$paradigm-vanilla" \
        --title "Shipped demo models, $paradigm paradigm" --out "$OUT/$paradigm"
  done
  ;;
*) echo "usage: $0 train|ship|eval [RUNS [NAME...]]" >&2; exit 2 ;;
esac
