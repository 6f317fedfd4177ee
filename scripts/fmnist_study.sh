#!/usr/bin/env bash
# The Fashion-MNIST study behind docs/results.md: five models per paradigm, same width, data and seed,
# each evaluated at its own loop counts with 1000 class-balanced samples, then merged into one table and plot.
#
#   scripts/fmnist_study.sh [RUNS] [OUT]        (defaults: runs/study and results)
#   PARADIGMS=diffusion MODELS="ilsd unique3" scripts/fmnist_study.sh    (a subset)
#   PARADIGMS=diffusion MODELS="ilsd unique12 inject cosine" NO_CFG_ROW=1 NO_MERGE=1 \
#     scripts/fmnist_study.sh runs/ablations results/ablations      (the ablations; merge by hand)
#   SAMPLING="sampling.guidance=2.0 masked.temperature_base=1.5" SUFFIX=_guided PARADIGMS=masked MODELS=... \
#     scripts/fmnist_study.sh runs/ablations results/ablations      (trained models, other sampling settings:
#     each is exported with them as defaults, so GFLOPs and latency count what that sampling costs; the rows are
#     <model>$SUFFIX_L..., named with ", $LABEL" added; LABEL defaults to $SAMPLING; fmnist_ablation_table.py --suffix pairs them)
#
# Training resumes from the newest checkpoint and marks a finished run with RUN/train.done; training,
# sampling and evaluation skip work whose output exists, so an interrupted study picks up where it stopped. One thread per
# process (2-core CPU: run two copies of a step in parallel by hand if you like). CPU time on a 2-core
# machine: about 30 min per masked model, 10 min per diffusion model, plus sampling (see docs/results.md).
# To reproduce one row only, run the three commands of that model (train, sample, eval) by hand.
set -euo pipefail
RUNS=${1:-runs/study}
OUT=${2:-results}
ELT=${ELT:-elt}
export OMP_NUM_THREADS=1
NUM=1000

# model name → training overrides and the loop counts it is evaluated at. Every model starts from the shipped
# config with model.input_injection=false (the paper's loop, as the study was run; the shipped configs now
# re-inject the input), so only the models that say input_injection=true below use it.
declare -A OVERRIDES=(
  [ilsd]=""                                              # ELT 3×4, ILSD
  [vanilla]="ilsd.mode=vanilla"                          # same looped model, teacher loss only
  [unique12]="ilsd.mode=unique"                          # 12 unique layers: same FLOPs, 4× the parameters
  [unique3]="model.loops=1 ilsd.mode=vanilla"            # 3 unique layers, one pass: same parameters
  [tiny1x12]="model.unique_layers=1 model.loops=12"      # too-small N: 1 layer looped 12 times, ILSD
  # ablations of the looped model (docs/results.md, "What closes the gap"): one change each
  [inject]="model.input_injection=true"                  # re-inject the input embedding at every loop
  [loopemb]="model.loop_embedding=true"                  # loop-index code added at every loop
  [cosine]="lr_schedule.kind=cosine lr_schedule.min_ratio=0.1"  # LR decay after warm-up
  [long2]="train.steps=@2xSTEPS@"                        # twice the config's training steps
  [inject_long2]="model.input_injection=true train.steps=@2xSTEPS@"  # the shipped setting, twice the steps
  [unique12_long2]="ilsd.mode=unique train.steps=@2xSTEPS@"
  [inject_lam1]="model.input_injection=true ilsd.lambda_schedule=constant ilsd.lambda_start=1.0"  # no distillation term
  [inject_min2]="model.input_injection=true ilsd.min_student_loops=2"  # students drawn from L = 2, 3 only
  [inject_lamcos]="model.input_injection=true ilsd.lambda_schedule=cosine"  # lambda 1 -> 0 along a cosine
  [inject_lam1_s1]="model.input_injection=true ilsd.lambda_schedule=constant ilsd.lambda_start=1.0 train.seed=1"
  [n6x2]="model.unique_layers=6 model.loops=2"           # N at fixed N×L
  [ilsd_w96]="model.width=96"                            # width ladder (192: ilsd / unique12)
  [unique12_w96]="model.width=96 ilsd.mode=unique"
  [inject_w96]="model.width=96 model.input_injection=true"
  [ilsd_s1]="train.seed=1"                               # a second seed of the three that matter most
  [inject_s1]="model.input_injection=true train.seed=1"
  [unique12_s1]="ilsd.mode=unique train.seed=1"
  [ilsd_w288]="model.width=288"
  [unique12_w288]="model.width=288 ilsd.mode=unique"
  [inject_w288]="model.width=288 model.input_injection=true"
)
# loop counts each model is evaluated at (a space separates sample folders); unlisted: L = 1…5
declare -A LOOPS=([ilsd]="1,2,3,4,5 6" [vanilla]="1,2,3,4,5 6" [unique12]="1" [unique3]="1,2,3,4"
                  [tiny1x12]="1,3,6,9,12,14" [n6x2]="1,2,3" [unique12_long2]="1" [unique12_w96]="1"
                  [unique12_w288]="1" [unique12_s1]="1")
declare -A NAMES=([ilsd]="ELT 3x4 ILSD" [vanilla]="ELT 3x4 vanilla" [unique12]="unique 12 layers"
                  [unique3]="unique 3 layers" [tiny1x12]="ELT 1x12 ILSD" [inject]="ELT 3x4 ILSD, input injection"
                  [loopemb]="ELT 3x4 ILSD, loop embedding" [cosine]="ELT 3x4 ILSD, cosine LR"
                  [long2]="ELT 3x4 ILSD, 2x steps" [inject_long2]="ELT 3x4 ILSD, input injection, 2x steps" [unique12_long2]="unique 12 layers, 2x steps"
                  [inject_lam1]="ELT 3x4 ILSD, input injection, lambda = 1 (no distillation)"
                  [inject_min2]="ELT 3x4 ILSD, input injection, students L >= 2"
                  [inject_lamcos]="ELT 3x4 ILSD, input injection, cosine lambda"
                  [inject_lam1_s1]="ELT 3x4 ILSD, input injection, lambda = 1, seed 1"
                  [n6x2]="ELT 6x2 ILSD" [ilsd_w96]="ELT 3x4 ILSD, width 96" [unique12_w96]="unique 12 layers, width 96"
                  [ilsd_w288]="ELT 3x4 ILSD, width 288" [unique12_w288]="unique 12 layers, width 288"
                  [inject_w288]="ELT 3x4 ILSD, input injection, width 288"
                  [inject_w96]="ELT 3x4 ILSD, input injection, width 96" [ilsd_s1]="ELT 3x4 ILSD, seed 1"
                  [inject_s1]="ELT 3x4 ILSD, input injection, seed 1" [unique12_s1]="unique 12 layers, seed 1")
MODELS=${MODELS:-ilsd vanilla unique12 unique3 tiny1x12}
SAMPLING=${SAMPLING:-}
SUFFIX=${SUFFIX:-}
[ -z "$SAMPLING" ] || [ -n "$SUFFIX" ] || { echo "SAMPLING needs a SUFFIX for its rows (e.g. SUFFIX=_guided)" >&2; exit 2; }
declare -A GUIDED=([masked]=2.0 [diffusion]=4.0)   # guidance s of the extra ILSD rows (configs: masked 1, diffusion 2;
# docs/results.md was measured with masked g = 1 under the earlier masked convention, the same as s = 2)

for paradigm in ${PARADIGMS:-masked diffusion}; do
  extra="train.threads=1"
  [ "$paradigm" = masked ] && extra="$extra tokenizer.path=$RUNS/masked_tokenizer"   # one tokenizer for all
  [ "$paradigm" = diffusion ] && extra="$extra train.precision=bf16"
  # @2xSTEPS@ in an override: twice the paradigm config's train.steps (diffusion 8000, masked 3000)
  steps2=$((2 * $(python -c "from elt.config import load_config; print(load_config('fmnist_$paradigm').train.steps)")))
  sources=()
  for model in $MODELS; do
    [ -n "${OVERRIDES[$model]+set}" ] || { echo "unknown model '$model'; known: ${!OVERRIDES[*]}" >&2; exit 2; }
    [ -n "${LOOPS[$model]:-}" ] || LOOPS[$model]="1,2,3,4,5"
    run=$RUNS/${paradigm}_$model
    if [ ! -e "$run/train.done" ]; then
      $ELT train fmnist_$paradigm model.input_injection=false ${OVERRIDES[$model]//@2xSTEPS@/$steps2} $extra train.out_dir=$run --resume auto --no-progress
      touch "$run/train.done"
    fi
    ckpt=$run name=${NAMES[$model]}
    if [ -n "$SAMPLING" ]; then                 # other sampling settings: an fp32 export that defaults to them
      ckpt=$run/export$SUFFIX name="$name, ${LABEL:-$SAMPLING}"
      # shellcheck disable=SC2086  # SAMPLING is a list of key=value words
      [ -e "$ckpt/config.yaml" ] || $ELT export --ckpt "$run" --out "$ckpt" --fp32 $SAMPLING
    fi
    for loops in ${LOOPS[$model]}; do           # a space separates sample folders (added loop counts)
      tag=${loops//,/_}
      samples=$run/eval_samples$SUFFIX; [ "$loops" != "${LOOPS[$model]%% *}" ] && samples=$run/eval_samples${SUFFIX}_L$tag
      [ -e "$samples/samples.json" ] || \
        $ELT sample --ckpt "$ckpt" --loops "$loops" --num $NUM --batch-size 250 --out "$samples" --no-progress
      dest=$OUT/$paradigm/runs/${model}${SUFFIX}_L$tag
      [ -e "$dest/eval.json" ] || \
        $ELT eval --ckpt "$ckpt" --samples "$samples" --loops "$loops" --num $NUM --name "$name" \
          --threads 1 --out "$dest" --no-progress
      sources+=("$dest")
    done
  done
  if [[ " $MODELS " == *" ilsd "* && -z "${NO_CFG_ROW:-}" ]]; then   # the ILSD model, stronger guidance
    cfg=${GUIDED[$paradigm]}
    dest=$OUT/$paradigm/runs/ilsd_cfg${cfg%.0}_L1_2_3_4_5
    [ -e "$dest/eval.json" ] || \
      $ELT eval --ckpt "$RUNS/${paradigm}_ilsd" --loops 1-5 --guidance "$cfg" --num $NUM --batch-size 250 \
        --name "ELT 3x4 ILSD, CFG ${cfg%.0}" --threads 1 --out "$dest" --no-progress
    sources+=("$dest")
  fi
  [ -n "${NO_MERGE:-}" ] || \
    $ELT eval merge "${sources[@]}" --title "Fashion-MNIST, $paradigm paradigm" --out "$OUT/$paradigm"
done
