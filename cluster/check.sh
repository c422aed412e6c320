#!/usr/bin/env bash
# Smoke test of the cluster started by cluster/start.sh (same BRAINALIGN_SLURM_DIR):
# the node is idle, a --gpus=1 job sees a CUDA_VISIBLE_DEVICES index, sacct records the job
# (with slurmdbd), and scancel ends a running job. Exit status 0 = all good. ~10 s.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
export PATH=$PATH:/usr/sbin:/sbin
[[ -f $SLURM_CONF ]] || die "no $SLURM_CONF: run cluster/start.sh first"
t() { timeout -k 5 "$@"; }
fail=0
ok() { log "ok: $*"; }
bad() { log "FAILED: $*"; fail=1; }

node=$(hostname -s)
state=$(t 10 sinfo -h -n "$node" -o %T)
[[ $state == idle || $state == mixed ]] && ok "sinfo: node $node $state" || bad "sinfo: node $node is '$state'"

out=$(mktemp -d)
chmod 777 "$out"
job=$(t 10 sbatch --parsable -t 1 -o "$out/gpu.out" --gpus=1 --wrap 'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"')
if [[ $job =~ ^[0-9]+$ ]]; then
    deadline=$((SECONDS + 60))
    until grep -q CUDA "$out/gpu.out" 2>/dev/null || ((SECONDS > deadline)); do sleep 0.5; done
    line=$(cat "$out/gpu.out" 2>/dev/null)
    [[ $line =~ ^CUDA_VISIBLE_DEVICES=[0-9]+$ ]] && ok "sbatch --gpus=1 (job $job): $line" || bad "GPU job $job printed '$line'"
else
    bad "sbatch --gpus=1 failed: $job"
fi

if [[ $ACCOUNTING == slurmdbd && -n ${job:-} ]]; then
    deadline=$((SECONDS + 30))
    until [[ $(t 10 sacct -n -X -P -j "$job" -o state 2>/dev/null) == COMPLETED ]] || ((SECONDS > deadline)); do sleep 1; done
    rec=$(t 10 sacct -n -X -P -j "$job" -o jobid,state,alloctres)
    [[ $rec == *COMPLETED*gres/gpu=1* ]] && ok "sacct: $rec" || bad "sacct shows '$rec'"
fi

sleeper=$(t 10 sbatch --parsable -t 2 -o /dev/null --wrap 'sleep 120')
deadline=$((SECONDS + 30))
until [[ $(t 10 squeue -h -j "$sleeper" -o %T 2>/dev/null) == RUNNING ]] || ((SECONDS > deadline)); do sleep 0.5; done
t 10 scancel "$sleeper"
deadline=$((SECONDS + 30))
until [[ $(t 10 squeue -h -j "$sleeper" -t all -o %T 2>/dev/null) == CANCELLED ]] || ((SECONDS > deadline)); do sleep 0.5; done
st=$(t 10 squeue -h -j "$sleeper" -t all -o %T 2>/dev/null)
[[ $st == CANCELLED ]] && ok "scancel $sleeper: squeue says $st" || bad "scancel $sleeper: squeue says '$st'"
if [[ $ACCOUNTING == slurmdbd ]]; then
    sleep 1
    log "     (sacct says '$(t 10 sacct -n -X -P -j "$sleeper" -o state)')"
fi
rm -rf "$out"
exit $fail
