#!/usr/bin/env bash
# The claim grid in LANES processes side by side (each takes the next unclaimed job), its variants in order of
# priority: the claim's pairs first, seed by seed, then the baselines, the budget lever and the rate check.
# With UNTIL (HH:MM) a lane starts no job that the records of like jobs say would still run then; with DEADLINE
# (seconds) every lane is stopped then (a job cut off goes on from its checkpoint, in the same runs folder); the
# records are collected either way.
#   LANES=2 UNTIL=14:30 bash results/claim/run_lanes.sh          # TASKS=mrpc,cola: only these teachers
set -u
cd "$(dirname "$0")/../.."
grid=src/sparsebert/research/experiments/claim.yaml
python=${PYTHON:-python3}
lanes=${LANES:-2}
tasks=${TASKS:+--tasks $TASKS}
until=${UNTIL:+--until $UNTIL}
order=(kap-teacher-head,prune-teacher no-teacher-taylor kap-teacher-head-2000,prune-teacher-2000
       prune-teacher-lr1e-4 no-teacher)
lane() {
    for only in "${order[@]}"; do
        OMP_NUM_THREADS=1 $python -m sparsebert experiment $grid --only "$only" $tasks $until || return
    done
}
for i in $(seq "$lanes"); do
    lane > "${LOGS:-/tmp}/claim-lane-$i.log" 2>&1 &
    sleep 2  # the first lanes take the teachers, the others wait for them rather than race for them
done
if [ "${DEADLINE:-0}" -gt 0 ]; then
    end=$((SECONDS + DEADLINE))
    while [ "$SECONDS" -lt "$end" ] && [ -n "$(jobs -rp)" ]; do sleep 2; done
    pkill -KILL -f "sparsebert experiment $grid" || true
fi
wait
$python -m sparsebert experiment $grid --collect > /dev/null
