#!/usr/bin/env bash
# The full comparison of one dataset and conv, as committed under experiments/results/<dataset>/:
#   1. kangnn tune: the KAN and its MLP twin (two processes, 1 thread each), the same number
#      of trials each, every trial cut to TUNE_EPOCHS epochs, selection on validation;
#   2. kangnn compare of the tuned pair over SEEDS seeds; with CHEMPROP=1, chemprop's tuning
#      (the same number of trials) starts as soon as the first of the two tunings ends, so two
#      processes run at all times (the comparison waits for both tunings, one run at a time);
#   3. with CHEMPROP=1, `kangnn compare --with chemprop` on the same folder adds chemprop at
#      its defaults and tuned (the KAN and MLP runs are kept; the rows come from one conv's
#      comparison per dataset: `kangnn report` refuses a model found in two summaries).
# With DESCRIPTORS=rdkit2d every model (chemprop too) also gets RDKit's molecule descriptors
# (dataset.descriptors), in folders tune-<conv>-rdkit2d and <conv>-rdkit2d.
# Every step is resumable: run the same command again to continue where it stopped.
#
#   CHEMPROP=1 bash experiments/verdict.sh esol gine   # TRIALS=12 SEEDS=6 TUNE_EPOCHS=80
#   bash experiments/verdict.sh esol dmpnn
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?usage: experiments/verdict.sh DATASET [CONV]}
conv=${2:-dmpnn}
trials=${TRIALS:-12}
seeds=${SEEDS:-6}
kangnn=${KANGNN:-.venv/bin/kangnn}
export OMP_NUM_THREADS=1
variant=$conv
set_up=(model.conv="$conv" dataset.features=chemprop tune.epochs="${TUNE_EPOCHS:-80}")
if [ -n "${DESCRIPTORS:-}" ]; then
  variant=$conv-$DESCRIPTORS
  set_up+=(dataset.descriptors="$DESCRIPTORS")
fi
tuned=experiments/results/$dataset/tune-$variant
tune() { "$kangnn" tune "experiments/$dataset.yaml" --trials "$trials" --out "$tuned" "${set_up[@]}" "$@"; }

tune --models kan &
kan=$!
tune --models mlp &
mlp=$!
out=experiments/results/$dataset/$variant
compare() { "$kangnn" compare "$tuned/best-kan.yaml" --seeds "$seeds" --out "$out" "$@"; }
if [ "${CHEMPROP:-0}" = 1 ]; then
  wait -n "$kan" "$mlp"  # one core is free: chemprop's tuning takes it
  tune --models chemprop &
  chemprop=$!
fi
wait "$kan"; wait "$mlp"  # each on its own: a list returns the last one's status
if [ "${CHEMPROP:-0}" = 1 ]; then
  [ -f "$out/summary.json" ] || compare --jobs 1
  wait "$chemprop"
  # --update: a row whose tuned config changed since the KAN/MLP comparison is re-run too
  grep -q '"chemprop-tuned"' "$out/compare.json" || compare --with chemprop --jobs 2 --update
else
  [ -f "$out/summary.json" ] || compare --jobs 2
fi
