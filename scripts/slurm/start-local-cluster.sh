#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, with slurmdbd accounting, so that
# Snakemake's SLURM executor (snakemake-executor-plugin-slurm) can be tested end to end:
#
#   munged -> mariadbd -> slurmdbd (+ cluster, account and user registered with sacctmgr)
#          -> slurmctld -> slurmd (one node sized from nproc/free, partition "debug", default)
#
# For Debian 12 (slurm-wlm 22.05), run as root, no systemd needed: the daemons are started directly
# in the background. Idempotent: installs only what is missing, rewrites a configuration file only
# when its content changes (restarting the daemons that read it), starts only what is not running.
# Fails loudly (exit 1, with the daemon's log tail) when something does not come up.
#
#   sudo scripts/slurm/start-local-cluster.sh        # then: sinfo; sacct; scripts/slurm/stop-local-cluster.sh
#
# Environment: LEAM_SLURM_CLUSTER (default leam), LEAM_SLURM_ACCOUNT (default leam),
#              LEAM_SLURM_TIMEOUT (seconds to wait for each daemon, default 120),
#              LEAM_SLURM_SMOKE (1: run a one-second srun job to prove the whole chain, default 1).
set -Eeuo pipefail

CLUSTER=${LEAM_SLURM_CLUSTER:-leam}
ACCOUNT=${LEAM_SLURM_ACCOUNT:-leam}
PARTITION=debug
TIMEOUT=${LEAM_SLURM_TIMEOUT:-120}
SMOKE=${LEAM_SLURM_SMOKE:-1}
NODE=$(hostname -s)
DB_NAME=slurm_acct_db
DB_USER=slurm
PACKAGES=(munge slurm-wlm slurm-client slurmdbd slurm-wlm-mysql-plugin mariadb-server mariadb-client)

SLURM_CONF=/etc/slurm/slurm.conf
SLURMDBD_CONF=/etc/slurm/slurmdbd.conf
MARIADB_CNF=/etc/mysql/mariadb.conf.d/60-slurmdbd.cnf
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
MARIADB_PID=/run/mysqld/mysqld.pid
MARIADB_LOG=/var/log/mysql/error.log
SLURMDBD_PID=/run/slurmdbd.pid
SLURMCTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
LOGDIR=/var/log/slurm

T0=$(date +%s.%N)
elapsed() { awk -v t0="$T0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'; }
log() { printf '[start-local-cluster %6ss] %s\n' "$(elapsed)" "$*"; }
die() {
    # die MESSAGE [LOGFILE...]: the message, the tail of each log, exit 1
    local msg=$1; shift
    printf '\n[start-local-cluster] ERROR: %s\n' "$msg" >&2
    local f
    for f in "$@"; do
        if [[ -s $f ]]; then
            printf -- '--- last lines of %s ---\n' "$f" >&2
            tail -n 25 "$f" >&2
        fi
    done
    printf '[start-local-cluster] FAILED after %ss\n' "$(elapsed)" >&2
    exit 1
}
trap 'die "unexpected failure (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s until it succeeds
wait_for() {
    local limit=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || return 1
        sleep 0.5
    done
}

# pid_alive PIDFILE: the daemon recorded there is running
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start_daemon PIDFILE NAME: start /usr/sbin/NAME unless the daemon recorded in PIDFILE is running
# (the Slurm daemons fork into the background themselves; their logs go to $LOGDIR/NAME.log)
start_daemon() {
    local pidfile=$1 name=$2
    if pid_alive "$pidfile"; then
        log "$name running (pid $(cat "$pidfile"))"
    else
        "/usr/sbin/$name" </dev/null >>"$LOGDIR/$name.stdout" 2>&1 \
            || die "$name did not start" "$LOGDIR/$name.log" "$LOGDIR/$name.stdout"
        log "started $name"
    fi
}

# stop_pid PIDFILE NAME: SIGTERM the recorded daemon (only that pid) and wait for it to exit
stop_pid() {
    local pidfile=$1 name=$2 pid
    pid_alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    log "restarting $name (pid $pid): its configuration changed"
    kill "$pid"
    wait_for 60 "$name to exit" bash -c "! kill -0 $pid" || die "$name (pid $pid) did not exit on SIGTERM"
}

# write_config PATH MODE CONTENT: (re)write PATH only when CONTENT differs; status 0 when written
write_config() {
    local path=$1 mode=$2 content=$3
    if [[ -f $path ]] && [[ "$(cat "$path")" == "$content" ]]; then
        return 1
    fi
    install -d -m 755 "$(dirname "$path")"
    local tmp
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$path"
    log "wrote $path"
    return 0
}

[[ $EUID -eq 0 ]] || die "must run as root (it installs packages, writes /etc/slurm and starts daemons); try: sudo $0"

# --- 1. packages ---------------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if (( ${#missing[@]} )); then
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/tmp/leam-slurm-apt.log 2>&1 || die "apt-get update failed" /tmp/leam-slurm-apt.log
    # policy-rc.d / no init system: postinst scripts cannot start the services; we start them below
    apt-get install -y -q "${missing[@]}" >>/tmp/leam-slurm-apt.log 2>&1 \
        || die "apt-get install ${missing[*]} failed" /tmp/leam-slurm-apt.log
    log "installed ${missing[*]}"
else
    log "packages present: ${PACKAGES[*]}"
fi
getent hosts "$NODE" >/dev/null || die "this machine's name '$NODE' does not resolve (slurmd must reach slurmctld at it): add it to /etc/hosts"

# --- 2. munge ------------------------------------------------------------------------------------
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
install -d -o munge -g munge -m 700 /etc/munge
if [[ ! -s $MUNGE_KEY ]] || (( $(stat -c %s "$MUNGE_KEY") < 32 )); then
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    log "created $MUNGE_KEY (1024 random bytes)"
fi
chown munge:munge "$MUNGE_KEY"
chmod 400 "$MUNGE_KEY"
if pid_alive "$MUNGE_PID"; then
    log "munged running (pid $(cat "$MUNGE_PID"))"
else
    runuser -u munge -- /usr/sbin/munged </dev/null >>/var/log/munge/munged.stdout 2>&1 \
        || die "munged did not start" /var/log/munge/munged.log /var/log/munge/munged.stdout
    log "started munged"
fi
wait_for "$TIMEOUT" munge bash -c 'munge -n | unmunge' \
    || die "munge credentials do not round-trip (munge -n | unmunge)" /var/log/munge/munged.log

# --- 3. slurm.conf: one node sized from nproc/free, partition debug (sacctmgr reads it too) ------
CPUS=$(nproc)
MEM_TOTAL=$(free -m | awk '/^Mem:/ { print $2 }')
RESERVE=$(( MEM_TOTAL / 10 < 2048 ? MEM_TOTAL / 10 : 2048 ))  # left to the OS and the daemons
REAL_MEM=$(( MEM_TOTAL - RESERVE ))
DEF_MEM_PER_CPU=$(( REAL_MEM / CPUS ))
write_config "$SLURM_CONF" 644 "# Written by leam scripts/slurm/start-local-cluster.sh: a single-node test cluster
# (${CPUS} CPUs, ${REAL_MEM} of ${MEM_TOTAL} MB) with slurmdbd accounting; see scripts/slurm/.
ClusterName=${CLUSTER}
SlurmctldHost=${NODE}
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPidFile=${SLURMCTLD_PID}
SlurmdPidFile=${SLURMD_PID}
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${DEF_MEM_PER_CPU}
# accounting in slurmdbd (sacct), job comments stored (the Snakemake plugin puts the rule name there)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MinJobAge=300
InactiveLimit=0
KillWait=30
Waittime=0
NodeName=${NODE} CPUs=${CPUS} RealMemory=${REAL_MEM} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP" && slurm_conf_changed=1 || slurm_conf_changed=0
if (( slurm_conf_changed )); then
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$SLURMCTLD_PID" slurmctld
fi

# --- 4. MariaDB for slurmdbd ---------------------------------------------------------------------
write_config "$MARIADB_CNF" 644 "# Written by leam scripts/slurm/start-local-cluster.sh: settings slurmdbd asks for (with a
# smaller buffer pool it logs 'Database settings not recommended values'; the pool fills lazily).
[mysqld]
innodb_buffer_pool_size = 1024M
innodb_log_file_size = 64M
innodb_lock_wait_timeout = 900
max_allowed_packet = 64M" && mariadb_conf_changed=1 || mariadb_conf_changed=0
install -d -o mysql -g root -m 755 /run/mysqld
install -d -o mysql -g adm -m 2750 /var/log/mysql
if [[ ! -d /var/lib/mysql/mysql ]]; then
    log "initialising /var/lib/mysql"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/tmp/leam-slurm-mariadb-install.log 2>&1 \
        || die "mariadb-install-db failed" /tmp/leam-slurm-mariadb-install.log
fi
if mysqladmin --protocol=socket -u root ping >/dev/null 2>&1 && (( mariadb_conf_changed )) && pid_alive "$MARIADB_PID"; then
    log "restarting mariadbd: its configuration changed"
    mysqladmin --protocol=socket -u root shutdown
fi
if mysqladmin --protocol=socket -u root ping >/dev/null 2>&1; then
    log "mariadbd running"
else
    setsid /usr/sbin/mariadbd --user=mysql --log-error="$MARIADB_LOG" </dev/null >/dev/null 2>&1 &
    log "starting mariadbd (pid $!)"
    wait_for "$TIMEOUT" mariadbd mysqladmin --protocol=socket -u root ping \
        || die "mariadbd did not answer 'mysqladmin ping' within ${TIMEOUT}s" "$MARIADB_LOG"
    log "mariadbd up"
fi
# the database password: kept from an earlier run (slurmdbd.conf), else a new random one
DB_PASS=$(sed -n 's/^StoragePass=//p' "$SLURMDBD_CONF" 2>/dev/null || true)
[[ -n $DB_PASS ]] || DB_PASS=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
mysql --protocol=socket -u root <<SQL || die "could not create the accounting database and its user" "$MARIADB_LOG"
CREATE DATABASE IF NOT EXISTS ${DB_NAME};
CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASS}';
ALTER USER '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASS}';
GRANT ALL ON ${DB_NAME}.* TO '${DB_USER}'@'localhost';
FLUSH PRIVILEGES;
SQL
log "database ${DB_NAME} and user ${DB_USER}@localhost ready"

# --- 5. slurmdbd ---------------------------------------------------------------------------------
install -d -o slurm -g slurm -m 755 "$LOGDIR" /var/lib/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
write_config "$SLURMDBD_CONF" 600 "# Written by leam scripts/slurm/start-local-cluster.sh (single-node test cluster).
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=${LOGDIR}/slurmdbd.log
PidFile=${SLURMDBD_PID}
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=${DB_USER}
StoragePass=${DB_PASS}
StorageLoc=${DB_NAME}" && stop_pid "$SLURMDBD_PID" slurmdbd || true
chown root:root "$SLURMDBD_CONF"
start_daemon "$SLURMDBD_PID" slurmdbd
wait_for "$TIMEOUT" slurmdbd sacctmgr -n list cluster \
    || die "slurmdbd does not answer sacctmgr within ${TIMEOUT}s" "$LOGDIR/slurmdbd.log"

# --- 6. accounting: cluster, account, users ------------------------------------------------------
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed" "$LOGDIR/slurmdbd.log"
    log "registered cluster $CLUSTER"
fi
if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="leam test account" Organization=leam >/dev/null \
        || die "sacctmgr add account $ACCOUNT failed" "$LOGDIR/slurmdbd.log"
    log "created account $ACCOUNT"
fi
users=(root)
[[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]] && users+=("$SUDO_USER")
for u in "${users[@]}"; do
    if ! sacctmgr -n -P list assoc cluster="$CLUSTER" account="$ACCOUNT" user="$u" format=user | grep -qx "$u"; then
        sacctmgr -i add user "$u" Account="$ACCOUNT" Cluster="$CLUSTER" DefaultAccount="$ACCOUNT" >/dev/null \
            || die "sacctmgr add user $u failed" "$LOGDIR/slurmdbd.log"
        log "user $u may submit with account $ACCOUNT"
    fi
    sacctmgr -i modify user "$u" set DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true
done

# --- 7. slurmctld, slurmd ------------------------------------------------------------------------
start_daemon "$SLURMCTLD_PID" slurmctld
wait_for "$TIMEOUT" slurmctld scontrol ping \
    || die "slurmctld does not answer 'scontrol ping' within ${TIMEOUT}s" "$LOGDIR/slurmctld.log"
start_daemon "$SLURMD_PID" slurmd

# --- 8. wait: node idle in sinfo, sacct answering -------------------------------------------------
node_state() { sinfo -h -N -n "$NODE" -p "$PARTITION" -o %T 2>/dev/null | head -n 1; }
resumed=0
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
    state=$(node_state || true)
    case $state in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*|inval*)
            if (( ! resumed )); then  # e.g. left down/drained by an earlier run: put it back
                log "node $NODE is $state; scontrol update state=resume"
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    if (( $(date +%s) >= deadline )); then
        reason=$(scontrol show node "$NODE" 2>&1 | sed -n 's/^ *Reason=//p' || true)
        die "node $NODE did not become idle within ${TIMEOUT}s (state '${state:-none}'${reason:+, reason: $reason})" \
            "$LOGDIR/slurmd.log" "$LOGDIR/slurmctld.log"
    fi
    sleep 0.5
done
log "sinfo: partition $PARTITION, node $NODE $state"
wait_for "$TIMEOUT" sacct sacct -X -n -S now-1hours \
    || die "sacct does not answer: $(sacct -X -n 2>&1 | head -n 3)" "$LOGDIR/slurmdbd.log" "$LOGDIR/slurmctld.log"
log "sacct answers (accounting storage: slurmdbd)"

if [[ $SMOKE == 1 ]]; then
    out=$(timeout "$TIMEOUT" srun -N1 -A "$ACCOUNT" -p "$PARTITION" -J leam-cluster-check -t 1 hostname 2>&1) \
        || die "srun smoke test failed: $out" "$LOGDIR/slurmd.log" "$LOGDIR/slurmctld.log"
    log "srun smoke test ran on $out"
fi

SLURM_VERSION=$(sinfo --version 2>/dev/null || true)
log "cluster '$CLUSTER' up ($SLURM_VERSION): node $NODE with $CPUS CPUs and ${REAL_MEM} MB, partition $PARTITION (default), account $ACCOUNT"
sinfo
log "done in $(elapsed)s"
