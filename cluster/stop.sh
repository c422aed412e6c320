#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by cluster/start.sh: cancels its jobs, then stops
# slurmd, slurmctld, slurmdbd, MariaDB and munged -- only the processes whose pid files lie in
# the state directory (BRAINALIGN_SLURM_DIR, default /tmp/brainalign-slurm).
#
#   cluster/stop.sh           # keep the state directory (job ids, accounting database, munge key)
#   cluster/stop.sh --purge   # and delete it
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
export PATH=$PATH:/usr/sbin:/sbin

purge=0
for arg in "$@"; do
    case $arg in
    --purge) purge=1 ;;
    -h | --help) sed -n '2,7p' "$0" && exit 0 ;;
    *) die "unknown argument: $arg" ;;
    esac
done
[[ -d $STATE_DIR ]] || { log "nothing to stop: no $STATE_DIR"; exit 0; }

# stop_daemon NAME PIDFILE EXE: SIGTERM, wait up to WAIT_S, then SIGKILL.
stop_daemon() {
    local name=$1 pidfile=$2 exe=$3 pid
    pid=$(daemon_pid "$pidfile" "$exe")
    if [[ -z $pid ]]; then
        log "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    local deadline=$((SECONDS + WAIT_S))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name: still running after ${WAIT_S}s, killing pid $pid"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    rm -f "$pidfile"
    log "$name: stopped (pid $pid)"
}

# Cancel the jobs first so that no slurmstepd (job) outlives slurmd.
if [[ -n $(daemon_pid "$RUN/slurmctld.pid" slurmctld) ]]; then
    jobs=$(timeout 20 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
        log "cancelling jobs: $jobs"
        timeout 20 scancel $jobs 2>/dev/null
        deadline=$((SECONDS + 30))
        while [[ -n $(timeout 10 squeue -h -t running,completing -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do
            sleep 1
        done
    fi
fi

stop_daemon slurmd "$RUN/slurmd.pid" slurmd
# any job step left over from an unclean shutdown of this cluster
for pid in $(pgrep -x slurmstepd 2>/dev/null); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF" ||
        grep -qs "$STATE_DIR" "/proc/$pid/cmdline"; then
        log "killing leftover slurmstepd $pid"
        kill -KILL "$pid" 2>/dev/null
    fi
done
stop_daemon slurmctld "$RUN/slurmctld.pid" slurmctld
stop_daemon slurmdbd "$RUN/slurmdbd.pid" slurmdbd
stop_daemon mariadbd "$STATE_DIR/mysql-run/mariadbd.pid" mariadbd
stop_daemon munged "$RUN/munged.pid" munged
rm -f "$RUN/munge.socket" "$RUN/munge.socket.lock"

if [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$SLURM_CONF" ]]; then
    rm -f "$DEFAULT_CONF"
    log "removed the link $DEFAULT_CONF"
fi

if ((purge)); then
    rm -rf "$STATE_DIR"
    log "removed $STATE_DIR"
fi
