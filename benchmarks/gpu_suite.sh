#!/usr/bin/env bash
# The GPU benchmark suite, in one go (under 10 minutes on one H100/H200): writes 9 JSON files into
# OUT_DIR (argument, else $OUT, else benchmarks/results/gpu) and prints every table.
#
#   benchmarks/gpu_suite.sh [OUT_DIR] [--smoke]     (--smoke: tiny sizes, runs anywhere, CPU included)
#
# It runs `python -m elt.bench suite` (sizes in SUITE_MODEL / SUITE of src/elt/bench/suites.py). What it measures
# (an ELT of width 1024, 16 heads, 6 unique layers × 4 loops, 256 tokens + a class token, batch 64, bf16):
#   env.json               GPU, driver, torch, and whether SDPA takes the flash kernel for our attention
#   train.json             ILSD vs vanilla vs unique stack (24×1) of equal FLOPs: step time, tokens/s, MFU, memory
#   train_compiled.json    the same with each block torch.compiled
#   sampling.json          sampling time vs loop count and vs batch size; the cost of one loop
#   memory.json            training memory of looped vs unique (and with per-loop activation checkpointing)
#   trainer.json           the real Trainer (bf16, TF32, fused AdamW) on synthetic data: samples/s, MFU
#   trainer_compiled.json  the same with train.compile=true
#   peers.json             elt vs diffusers' DiTTransformer2DModel and a plain nn.TransformerEncoder with copied
#                          weights at the ImageNet recipes' widths (elt bench peers): time ratios, % of torch.mm
#   recipes.json           every shipped ImageNet/UCF recipe at real width on synthetic data: step time,
#                          tokens/s, MFU, peak memory; ELT vs its iso-FLOP baseline at batch 8 (inference)
#
# Needs python3 with a CUDA PyTorch plus omegaconf, safetensors, numpy, tqdm, pillow, matplotlib (and diffusers
# for the DiT peer: without it peers.json skips the diffusion rows). On a
# machine without a package index, bring omegaconf as a wheel in benchmarks/wheels/ (prepare it where pip
# works: pip download omegaconf --no-deps -d benchmarks/wheels); this script installs it from there.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${OUT:-benchmarks/results/gpu}"
SMOKE=""
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE="--smoke" ;;
    *) OUT_DIR="$arg" ;;
  esac
done
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import omegaconf" 2>/dev/null; then
  if ls benchmarks/wheels/omegaconf-*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps benchmarks/wheels/omegaconf-*.whl
  else
    echo "gpu_suite: omegaconf is missing and benchmarks/wheels/ has no wheel for it" \
         "(pip download omegaconf --no-deps -d benchmarks/wheels)" >&2
    exit 2
  fi
fi

if [ -n "$SMOKE" ]; then
  EXTRA=(--smoke --compile-backend eager)  # tiny sizes; tracing checked, no C++/Triton compilation
else
  EXTRA=()
fi
# one process: one CUDA start-up, and the compiled block is reused across benchmarks
status=0
"$PY" -m elt.bench suite --out "$OUT_DIR" "${EXTRA[@]}" || status=$?
# then every paper-scale recipe at its real width (benchmarks/recipe_throughput.py), in what is left of
# 10 minutes (recipes that do not fit are listed as skipped in recipes.json)
BUDGET=$(( 570 - SECONDS ))
if [ "$BUDGET" -lt 60 ]; then BUDGET=60; fi
"$PY" benchmarks/recipe_throughput.py --out "$OUT_DIR" --budget-s "$BUDGET" $SMOKE || status=$?
exit $status
