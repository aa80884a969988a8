#!/usr/bin/env bash
# The full comparison of one dataset and conv, as committed under experiments/results/<dataset>/:
#   1. kangnn tune: the KAN and its MLP twin (two processes, 1 thread each), then chemprop, the
#      same number of trials each, every trial cut to TUNE_EPOCHS epochs, selection on validation;
#   2. kangnn compare of the tuned pair with chemprop (defaults and tuned) over SEEDS seeds, two
#      runs at a time.
# Every step is resumable: run the same command again to continue where it stopped.
#
#   bash experiments/verdict.sh esol dmpnn        # TRIALS=12 SEEDS=6 TUNE_EPOCHS=80 by default
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?usage: experiments/verdict.sh DATASET [CONV]}
conv=${2:-dmpnn}
trials=${TRIALS:-12}
seeds=${SEEDS:-6}
kangnn=${KANGNN:-.venv/bin/kangnn}
export OMP_NUM_THREADS=1
tuned=experiments/results/$dataset/tune-$conv
set_up=(model.conv="$conv" dataset.features=chemprop tune.epochs="${TUNE_EPOCHS:-80}")

"$kangnn" tune "experiments/$dataset.yaml" --models kan --trials "$trials" --out "$tuned" "${set_up[@]}" &
kan=$!
"$kangnn" tune "experiments/$dataset.yaml" --models mlp --trials "$trials" --out "$tuned" "${set_up[@]}"
wait "$kan"
"$kangnn" tune "experiments/$dataset.yaml" --models chemprop --trials "$trials" --out "$tuned" "${set_up[@]}"
"$kangnn" compare "$tuned/best-kan.yaml" --with chemprop --seeds "$seeds" --jobs 2 \
  --out "experiments/results/$dataset/$conv"
