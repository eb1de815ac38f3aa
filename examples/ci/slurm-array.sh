#!/usr/bin/env bash
# Slurm: an array job runs the slices, a dependent job merges them. Submit from the project
# root (the reports' paths are relative to it):
#   N=3 examples/ci/slurm-array.sh        (CONFIG=path/to/ferrocert.toml, BIN=path/to/ferrocert)
# Each task runs `ferrocert certify --shard $SLURM_ARRAY_TASK_ID/$N` (a slice whose own gate
# failed exits 0 here: the merge judges it; an error fails the task); the merge runs once every
# task succeeded (afterok) and its exit code is the gate.
set -euo pipefail
N=${N:-3}
BIN=${BIN:-./target/release/ferrocert}
CONFIG=${CONFIG:-specs/ferrocert.toml}
mkdir -p slurm-reports
jid=$(sbatch --parsable --array=1-"$N" --cpus-per-task=2 --job-name=ferrocert-shard \
  --output=slurm-reports/shard-%a.log \
  --wrap="$BIN certify --config $CONFIG --shard \$SLURM_ARRAY_TASK_ID/$N --out slurm-reports/shard-\$SLURM_ARRAY_TASK_ID || [ \$? -eq 1 ]")
dirs=$(seq -f "slurm-reports/shard-%g" 1 "$N" | tr '\n' ' ')
sbatch --dependency=afterok:"$jid" --job-name=ferrocert-merge --output=slurm-reports/merge.log \
  --wrap="$BIN merge $dirs --out slurm-reports/merged"
echo "submitted array job $jid ($N shards) and its merge"
