#!/usr/bin/env bash
# The vanilla-looped demo models (demo:masked-vanilla, demo:diffusion-vanilla): the shipped ILSD demo models'
# configs with ilsd.mode=vanilla (teacher loss only), same steps, batch, seed and data; the masked one reuses
# the ILSD model's tokenizer, taken out of its checkpoint, so both masked models see the same tokens.
#
#   scripts/demo_vanilla_models.sh train [RUNS]    train both (one thread each, in parallel; resumable)
#   scripts/demo_vanilla_models.sh ship  [RUNS]    export both as fp16 inference checkpoints into the package
#
# RUNS defaults to runs/demo_vanilla. The diffusion run uses train.precision=bf16 (the ILSD model: fp32) to be
# about 3x faster on CPUs with AVX512-BF16; sampling then also runs in bf16.
set -euo pipefail
ACTION=${1:?usage: $0 train|ship [RUNS]}
RUNS=${2:-runs/demo_vanilla}
PY=${PYTHON:-python}
ASSETS=src/elt/assets/demo
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$RUNS"

case "$ACTION" in
train)
  if [ ! -f "$RUNS/tokenizer/tokenizer.json" ]; then
    "$PY" - "$RUNS/tokenizer" <<'EOF'
import sys
import elt
from elt.tokenizers import fsq
tokenizer = elt.load("demo:masked").tokenizer.float()
fsq.save_tokenizer(tokenizer, sys.argv[1], info={"source": "demo:masked (fp16 export of the ILSD demo model)"})
EOF
  fi
  "$PY" -m elt.cli train "$ASSETS/masked/config.yaml" ilsd.mode=vanilla train.threads=1 \
    train.out_dir="$RUNS/masked_vanilla" tokenizer.path="$RUNS/tokenizer" --resume auto --no-progress \
    > "$RUNS/masked_vanilla.log" 2>&1 &
  "$PY" -m elt.cli train "$ASSETS/diffusion/config.yaml" ilsd.mode=vanilla train.threads=1 train.precision=bf16 \
    train.out_dir="$RUNS/diffusion_vanilla" --resume auto --no-progress > "$RUNS/diffusion_vanilla.log" 2>&1 &
  wait
  ;;
ship)
  for paradigm in masked diffusion; do
    out="$ASSETS/$paradigm-vanilla"
    "$PY" -m elt.cli export --ckpt "$RUNS/${paradigm}_vanilla" --out "$out"
    # the run's folders as relative paths, like the ILSD models' configs (sampling never reads them)
    sed -i "s#^  out_dir: .*#  out_dir: runs/${paradigm}_vanilla#; s#^  path: .*tokenizer.*#  path: runs/masked_tokenizer#" \
      "$out/config.yaml"
    du -b "$out"/*
  done
  ;;
*) echo "usage: $0 train|ship [RUNS]" >&2; exit 2 ;;
esac
