# Shared settings of cluster/start.sh and cluster/stop.sh (sourced, not run).
# Every setting can be overridden from the environment; start.sh and stop.sh must see the same
# BRAINALIGN_SLURM_DIR.

STATE_DIR=${BRAINALIGN_SLURM_DIR:-/tmp/brainalign-slurm}
# slurmdbd (sacct works, needs MariaDB) | none (no accounting: the profile must poll with squeue)
ACCOUNTING=${BRAINALIGN_SLURM_ACCOUNTING:-slurmdbd}
CLUSTER_NAME=${BRAINALIGN_SLURM_CLUSTER:-brainalign}
PARTITION=${BRAINALIGN_SLURM_PARTITION:-debug}
ACCOUNT=${BRAINALIGN_SLURM_ACCOUNT:-brainalign}
# Fake GPUs: device files are symlinks to /dev/null (Slurm drops a gpu gres without File=).
NGPUS=${BRAINALIGN_SLURM_GPUS:-2}
GPU_TYPE=${BRAINALIGN_SLURM_GPU_TYPE:-fake}
DEF_MEM_PER_CPU=${BRAINALIGN_SLURM_DEF_MEM_PER_CPU:-1000}
# Ports: slurmctld = base, slurmd = base+1, slurmdbd = base+2, MariaDB = base+3 (127.0.0.1 only).
PORT_BASE=${BRAINALIGN_SLURM_PORT:-16817}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
# The snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every SLURM_* variable, SLURM_CONF
# included, before the `srun` it runs inside each job, so that srun only finds the compiled-in
# /etc/slurm/slurm.conf. 1: start.sh links it to this cluster's slurm.conf when the path is free
# (or a dangling/our link), stop.sh removes the link again. 0: leave /etc/slurm alone.
LINK_ETC=${BRAINALIGN_SLURM_LINK_ETC:-1}
DEFAULT_CONF=/etc/slurm/slurm.conf
# Seconds to wait for each daemon to come up / go down.
WAIT_S=${BRAINALIGN_SLURM_WAIT:-60}

ETC=$STATE_DIR/etc
RUN=$STATE_DIR/run
LOG=$STATE_DIR/log
export SLURM_CONF=$ETC/slurm.conf

log() { printf '[brainalign-slurm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid of a daemon we started, if it is still alive and is the expected program; else empty.
daemon_pid() { # pidfile exe-basename
    local pidfile=$1 exe=$2 pid
    [[ -s $pidfile ]] || return 0
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    # guard against a recycled pid: the process must run the expected binary
    if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */"$exe" ]] ||
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$exe"; then
        echo "$pid"
    fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND (silenced) every 0.5 s until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
    log "$what: ok"
}
