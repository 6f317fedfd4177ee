#!/usr/bin/env bash
# The GPU benchmark suite, in one go, bounded by a wall-clock budget (default 570 s, under 10 minutes on one
# H100/H200, compiles included): writes its JSON files into OUT_DIR and prints every table.
#
#   benchmarks/gpu_suite.sh [OUT_DIR] [--smoke]   run the suite (OUT_DIR: else $OUT, else benchmarks/results/gpu;
#                                                  --smoke: tiny sizes, runs anywhere, CPU included)
#   benchmarks/gpu_suite.sh --fetch-wheels        where pip reaches an index: download every dependency the
#                                                  suite imports into benchmarks/wheels/ (then carry that folder)
#   benchmarks/gpu_suite.sh --help                this text
#
# Environment: PYTHON (default python3); GPU_SUITE_BUDGET_S (the wall-clock budget of the whole run, seconds);
# WHEEL_PYTHON (--fetch-wheels: the target's Python version for the binary wheels, e.g. 3.10; default this one's).
#
# Stages, each under `timeout` with what is left of the budget (a stage cut by the deadline is stopped, the
# JSON of the benchmarks it finished stays, and the next stages still run if time is left):
#   suite    `python -m elt.bench suite` (sizes in SUITE_MODEL / SUITE of src/elt/bench/suites.py; it also
#            skips the benchmarks that would start after its deadline) — an ELT of width 1024, 16 heads,
#            6 unique layers × 4 loops, 256 tokens + a class token, batch 64, bf16:
#     env.json               GPU, driver, torch, and whether SDPA takes the flash kernel for our attention
#     train.json             ILSD vs vanilla vs unique stack (24×1) of equal FLOPs: step time, tokens/s, MFU, memory
#     train_compiled.json    the same with each block torch.compiled
#     sampling.json          sampling time vs loop count and vs batch size; the cost of one loop
#     scaling.json           sampling time of both paradigms (the demo shapes) against batch (1-256), loops
#                            (1-2·L_max), tokens (8×8-32×32 grids) and steps, fixed and per-unit costs fitted
#                            (elt bench scaling; + scaling_diffusion.png, scaling_masked.png with matplotlib;
#                            without it: python -m elt.bench.scaling OUT_DIR/scaling.json draws them later)
#     memory.json            training memory of looped vs unique (and with per-loop activation checkpointing)
#     trainer.json           the real Trainer (bf16, TF32, fused AdamW) on synthetic data: samples/s, MFU
#     trainer_compiled.json  the same with train.compile=true
#     peers.json             elt vs diffusers' DiTTransformer2DModel and a plain nn.TransformerEncoder with copied
#                            weights at the ImageNet recipes' widths (elt bench peers): time ratios, % of torch.mm
#                            (without diffusers the DiT rows are skipped; --smoke: the same two configs at
#                            width 32 and 64-pixel images)
#   recipes  benchmarks/recipe_throughput.py: every shipped ImageNet/UCF recipe at real width on synthetic data
#            (step time, tokens/s, MFU, peak memory) and ELT vs its iso-FLOP baseline at batch 8 (inference),
#            both within the stage's budget (recipes.json lists what did not fit as skipped)
# and gpu_suite.json: the card, each stage's status (ok, failed, timed out, skipped), seconds, and the budget.
# The card (torch.cuda.get_device_name; "no GPU (CPU: ...)" elsewhere) is printed first and last.
# Exit status: 0 when every stage finished, 124 when the deadline cut one, else the first failure's status.
#
# Needs python3 with a CUDA PyTorch. The other imports (omegaconf, antlr4-python3-runtime, PyYAML, numpy,
# tqdm, safetensors, pillow, typing_extensions) are installed, if missing, from benchmarks/wheels/ without an
# index (into a folder on PYTHONPATH, the environment is not changed); without them it tries the index, and
# if that fails too it still records the GPU and torch in env.json and says what is missing.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

OUT_DIR="${OUT:-benchmarks/results/gpu}"
SMOKE=""
FETCH=""
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --smoke) SMOKE="--smoke" ;;
    --fetch-wheels) FETCH=1 ;;
    -*) echo "gpu_suite: unknown option $arg (allowed: --smoke, --fetch-wheels, --help)" >&2; exit 2 ;;
    *) OUT_DIR="$arg" ;;
  esac
done
PY="${PYTHON:-python3}"
WHEELS=benchmarks/wheels
PURE=(omegaconf "antlr4-python3-runtime==4.9.3" tqdm typing_extensions)
BINARY=(PyYAML numpy safetensors pillow)

if [ -n "$FETCH" ]; then
  mkdir -p "$WHEELS"
  target="${WHEEL_PYTHON:-$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
  set -e
  "$PY" -m pip download -q --no-deps -d "$WHEELS" "${PURE[@]}"
  # antlr4's runtime is published as a source archive only: build its (pure-Python) wheel here
  if ls "$WHEELS"/antlr4-python3-runtime-*.tar.gz >/dev/null 2>&1; then
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$WHEELS"/antlr4-python3-runtime-*.tar.gz
    rm -f "$WHEELS"/antlr4-python3-runtime-*.tar.gz
  fi
  "$PY" -m pip download -q --no-deps -d "$WHEELS" --only-binary=:all: --python-version "$target" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${BINARY[@]}"
  echo "gpu_suite: wheels for Python $target in $WHEELS ($(du -sh "$WHEELS" | cut -f1)):"
  ls "$WHEELS"
  exit 0
fi

BUDGET="${GPU_SUITE_BUDGET_S:-570}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
STATUS_LINES=()
record() { STATUS_LINES+=("{\"stage\": \"$1\", \"status\": \"$2\", \"seconds\": $3}"); }
card() {  # the GPU's name (as torch sees it), else the CPU's: what every figure of this run ran on
  "$PY" - <<'EOF' 2>/dev/null || echo "unknown (torch not importable)"
import platform
import torch
if torch.cuda.is_available():
    print(torch.cuda.get_device_name())
else:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"no GPU (CPU: {cpu})")
EOF
}
CARD="$(card)"
echo "gpu_suite: card $CARD"
write_status() {
  local IFS=,
  printf '{"card": "%s", "budget_s": %s, "seconds": %s, "smoke": %s, "stages": [%s]}\n' \
    "${CARD//\"/}" "$BUDGET" "$SECONDS" "$([ -n "$SMOKE" ] && echo true || echo false)" \
    "${STATUS_LINES[*]}" > "$OUT_DIR/gpu_suite.json"
}

# -- what the suite imports: installed from the carried wheels when missing ------------------------------------
MODULES=(omegaconf antlr4 yaml numpy tqdm safetensors PIL typing_extensions)
missing() { "$PY" - "${MODULES[@]}" <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}
MISSING="$(missing)"
if [ -n "$MISSING" ]; then
  SITE="${TMPDIR:-/tmp}/elt-gpu-suite-site"
  mkdir -p "$SITE"
  export PYTHONPATH="$PYTHONPATH:$SITE"
  DISTS=()
  for m in $MISSING; do
    case "$m" in
      antlr4) DISTS+=("antlr4-python3-runtime==4.9.3") ;; yaml) DISTS+=(PyYAML) ;; PIL) DISTS+=(pillow) ;;
      *) DISTS+=("$m") ;;
    esac
  done
  echo "gpu_suite: not importable: $MISSING; installing ${DISTS[*]} into $SITE" >&2
  if [ -d "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$SITE" "${DISTS[@]}" \
      || echo "gpu_suite: $WHEELS lacks some of them" >&2
  fi
  MISSING="$(missing)"
  if [ -n "$MISSING" ]; then  # no wheel carried: the index, if this machine reaches one (bounded)
    timeout 60 "$PY" -m pip install -q --no-deps --timeout 10 --retries 1 --target "$SITE" "${DISTS[@]}" \
      >/dev/null 2>&1 || true
    MISSING="$(missing)"
  fi
fi
if [ -n "$MISSING" ]; then
  echo "gpu_suite: still not importable: $MISSING (run benchmarks/gpu_suite.sh --fetch-wheels where pip" \
       "works and carry benchmarks/wheels/); recording the device only" >&2
  "$PY" - "$OUT_DIR/env.json" "$MISSING" <<'EOF' || true
import json, sys
import torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "missing_modules": sys.argv[2].split()}
if torch.cuda.is_available():
    info["device"] = torch.cuda.get_device_name()
    info["memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=2)
print(json.dumps(info, indent=2))
EOF
  record imports failed "$SECONDS"
  record suite skipped 0
  record recipes skipped 0
  write_status
  exit 2
fi

# -- the stages, each bounded by what is left of the budget --------------------------------------------------------
RESULT=0
run_stage() {  # NAME SECONDS_ALLOWED COMMAND...: run under timeout, record the outcome
  local name="$1" allowed="$2" started=$SECONDS rc=0
  shift 2
  if [ "$allowed" -lt 1 ]; then
    echo "gpu_suite: stage $name skipped (no time left in the ${BUDGET} s budget)" >&2
    record "$name" skipped 0
    [ "$RESULT" -eq 0 ] && RESULT=124
    return
  fi
  echo "gpu_suite: stage $name (at most $allowed s)" >&2
  timeout --kill-after=10 "$allowed" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "gpu_suite: stage $name stopped by the deadline after $((SECONDS - started)) s" >&2
    record "$name" timed_out $((SECONDS - started))
    [ "$RESULT" -eq 0 ] && RESULT=124
  elif [ "$rc" -ne 0 ]; then
    record "$name" failed $((SECONDS - started))
    [ "$RESULT" -eq 0 ] && RESULT=$rc
  else
    record "$name" ok $((SECONDS - started))
  fi
}
left() { echo $(( BUDGET - SECONDS )); }

if [ -n "$SMOKE" ]; then
  EXTRA=(--smoke --compile-backend eager)  # tiny sizes; tracing checked, no C++/Triton compilation
else
  EXTRA=()
fi
# one process for the synthetic benchmarks: one CUDA start-up, and the compiled block is reused across them.
# It may use the budget less what the recipes need (a third, at most 180 s); its own deadline makes it skip
# the benchmarks that would start too late, `timeout` stops one that runs over.
RESERVE=$(( BUDGET / 3 < 180 ? BUDGET / 3 : 180 ))
ALLOWED=$(( $(left) - RESERVE ))
export ELT_SUITE_DEADLINE=$(( $(date +%s) + ALLOWED - 5 ))
run_stage suite "$ALLOWED" "$PY" -m elt.bench suite --out "$OUT_DIR" "${EXTRA[@]}"
unset ELT_SUITE_DEADLINE
# then every paper-scale recipe at its real width, in what is left (it keeps 10 s to write its JSON)
ALLOWED=$(left)
run_stage recipes "$ALLOWED" "$PY" benchmarks/recipe_throughput.py --out "$OUT_DIR" \
  --budget-s "$(( ALLOWED > 20 ? ALLOWED - 10 : ALLOWED / 2 ))" $SMOKE
write_status
echo "gpu_suite: card $CARD; $SECONDS s of the ${BUDGET} s budget; stages: ${STATUS_LINES[*]}"
exit "$RESULT"
