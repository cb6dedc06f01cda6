#!/usr/bin/env bash
# Stop the single-node SLURM test cluster started by scripts/slurm/start-local-cluster.sh:
# slurmd, slurmctld, slurmdbd, mariadbd, munged, in that order, each by the pid in its pid file
# (SIGTERM, then SIGKILL after LEAM_SLURM_STOP_TIMEOUT seconds, default 60). Running jobs are
# cancelled first. Configuration, the accounting database and the job history are kept, so the
# next start is fast and `sacct` still lists earlier jobs. Safe to run when nothing is running.
set -uo pipefail

TIMEOUT=${LEAM_SLURM_STOP_TIMEOUT:-60}
T0=$(date +%s.%N)
log() { printf '[stop-local-cluster %6ss] %s\n' "$(awk -v t0="$T0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }')" "$*"; }

[[ $EUID -eq 0 ]] || { echo "stop-local-cluster: must run as root; try: sudo $0" >&2; exit 1; }

# stop PIDFILE NAME
stop() {
    local pidfile=$1 name=$2 pid
    if [[ ! -s $pidfile ]] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "$name not running"
        rm -f "$pidfile"
        return 0
    fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    local deadline=$(( $(date +%s) + TIMEOUT ))
    while kill -0 "$pid" 2>/dev/null; do
        if (( $(date +%s) >= deadline )); then
            log "$name (pid $pid) still running after ${TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            sleep 1
            break
        fi
        sleep 0.2
    done
    log "stopped $name (pid $pid)"
}

if [[ -s /run/slurmctld.pid ]] && kill -0 "$(cat /run/slurmctld.pid)" 2>/dev/null; then
    n=$(squeue -h -o %i 2>/dev/null | wc -l)
    if (( n > 0 )); then
        log "cancelling $n queued/running job(s)"
        squeue -h -o %i | xargs -r scancel 2>/dev/null || true
        sleep 2
    fi
fi

stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
stop /run/slurmdbd.pid slurmdbd
if mysqladmin --protocol=socket -u root ping >/dev/null 2>&1; then
    pid=$(cat /run/mysqld/mysqld.pid 2>/dev/null || echo '?')
    if mysqladmin --protocol=socket -u root shutdown 2>/dev/null; then
        log "stopped mariadbd (pid $pid)"
    else
        stop /run/mysqld/mysqld.pid mariadbd
    fi
else
    log "mariadbd not running"
fi
stop /run/munge/munged.pid munged
log "done"
