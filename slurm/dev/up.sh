#!/usr/bin/env bash
# Start a real single-node Slurm (with accounting) for development and CI. Idempotent: a second
# run checks the daemons and returns in seconds. Never for a machine with a real cluster: it
# writes /etc/slurm/slurm.conf (and refuses to replace one it did not write, unless --force).
# See slurm/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash slurm/dev/up.sh [--force]

Installs munge, Slurm (slurmctld, slurmd, client, slurmdbd) and MariaDB when missing, writes
their configuration under one state folder and starts munged, mariadbd, slurmdbd, slurmctld and
slurmd; then proves the cluster with `srun echo ok` and `sacct`. Run as root.

  --force   replace an /etc/slurm/slurm.conf that this script did not write (kept as a backup)

Environment:
  TOLPIPE_SLURM_DIR        state folder (default: ${TMPDIR:-/tmp}/tolpipe-slurm)
  TOLPIPE_SLURM_CPUS       CPUs the node advertises (default 8; more than the cores on purpose)
  TOLPIPE_SLURM_MEMORY_MB  memory the node advertises, MB (default: the machine's total)
  TOLPIPE_SLURM_TIMEOUT_S  deadline of each readiness wait, seconds (default 60)
EOF
}

FORCE=0
for arg in "$@"; do
    case $arg in
        --force) FORCE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
CLUSTER_NAME=tolpipe
PARTITION=debug
NODE=localhost
# More CPUs than cores (honoured through SlurmdParameters=config_overrides) so that a dask
# cluster and training or evaluation jobs can run side by side on a 2-core machine.
CPUS=${TOLPIPE_SLURM_CPUS:-8}
MEMORY_MB=${TOLPIPE_SLURM_MEMORY_MB:-$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)}
TIMEOUT_S=${TOLPIPE_SLURM_TIMEOUT_S:-60}
DBD_PORT=6819
DB_NAME=slurm_acct_db
DB_USER=slurm

check_environment() {
    [[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts system daemons)"
    [[ $STATE_DIR == /* && $STATE_DIR != *[[:space:]]* ]] ||
        die "state folder must be an absolute path without spaces: '$STATE_DIR'"
    [[ $CPUS =~ ^[1-9][0-9]*$ && $MEMORY_MB =~ ^[1-9][0-9]*$ && $TIMEOUT_S =~ ^[1-9][0-9]*$ ]] ||
        die "TOLPIPE_SLURM_CPUS, TOLPIPE_SLURM_MEMORY_MB and TOLPIPE_SLURM_TIMEOUT_S: positive integers"
}

# A slurm.conf this script did not write belongs to a real cluster: leave it alone.
guard_real_cluster() {
    if [[ -e $SYSTEM_SLURM_CONF ]] && ! grep -qxF "$MARKER" "$SYSTEM_SLURM_CONF"; then
        if (( ! FORCE )); then
            die "$SYSTEM_SLURM_CONF exists and was not written by this script: this machine looks" \
                "like part of a real cluster. Use its Slurm as it is (see slurm/README.md), or" \
                "rerun with --force to replace it (a backup is kept)"
        fi
        local backup
        backup=$SYSTEM_SLURM_CONF.before-tolpipe.$(date +%Y%m%dT%H%M%S)
        cp -p "$SYSTEM_SLURM_CONF" "$backup"
        step "guard: --force: kept the existing slurm.conf as $backup"
    fi
    local name pid ours
    for name in slurmctld slurmd slurmdbd; do
        ours=$(running_pid "$name" || true)
        for pid in $(find_procs "$name"); do
            [[ $pid == "$ours" ]] ||
                die "a $name not started by this script is running (pid $pid; another" \
                    "TOLPIPE_SLURM_DIR, or a deleted state folder?): stop it first (kill $pid)"
        done
    done
}

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) == installed ]] ||
            echo "$pkg"
    done
}

install_packages() {
    local missing
    missing=$(missing_packages | xargs)
    if [[ -z $missing ]]; then
        step "packages: present"
        return
    fi
    command -v apt-get >/dev/null || die "missing packages ($missing) and no apt-get"
    mkdir -p "$LOG_DIR"
    local log=$LOG_DIR/apt.log
    step "packages: installing $missing"
    # Package scripts do not start daemons here (policy-rc.d or no init): this script does.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$log" 2>&1 || { show_log "$log"; die "apt-get update failed"; }
    step "packages: apt-get update done"
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$log" 2>&1 ||
        { show_log "$log"; die "apt-get install failed"; }
    step "packages: installed"
}

make_folders() {
    install -d -m 0755 "$STATE_DIR" "$ETC_DIR" "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR" \
        "$SPOOL_DIR/ctld" "$SPOOL_DIR/d"
    install -d -m 0700 -o munge -g munge "$MUNGE_DIR"
    install -d -m 0755 -o mysql -g mysql "$MYSQLD_DIR" "$DB_DIR"
    install -d -m 0755 -o munge -g munge "$MUNGE_SOCKET_DIR"
    install -d -m 0755 -o mysql -g mysql "$MYSQL_SOCKET_DIR"
    # slurmd runs job scripts from its spool folder: it must not be on a noexec mount.
    local probe=$SPOOL_DIR/d/.exec-probe
    printf '#!/bin/sh\nexit 0\n' >"$probe"
    chmod 0755 "$probe"
    "$probe" 2>/dev/null ||
        die "$SPOOL_DIR cannot run programs (noexec mount?): set TOLPIPE_SLURM_DIR elsewhere"
    rm -f "$probe"
}

# Write stdin to PATH with MODE only when the content differs; status 0 when it changed.
write_if_changed() {
    local path=$1 mode=$2 tmp
    tmp=$(mktemp "$path.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$path"
}

render_slurm_conf() {
    cat <<EOF
$MARKER
# A single-node Slurm for tolpipe development and CI. slurm/README.md explains every setting;
# a real cluster is configured through the project's [cluster] config instead.
ClusterName=$CLUSTER_NAME
# "localhost" everywhere (and slurmd -N localhost): works whatever the machine's hostname is.
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# Job credentials expire after 5 s (default 120 s): a requeued job can start again at once.
AuthInfo=cred_expire=5
StateSaveLocation=$SPOOL_DIR/ctld
SlurmdSpoolDir=$SPOOL_DIR/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No cgroups and no systemd: processes are tracked through /proc (memory is not enforced).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Cores are the consumable resource; with CR_Core_Memory and no DefMemPerCPU every job would
# take the whole node and jobs would run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Trust the node line below (more CPUs than cores, the memory we say) instead of the hardware.
SlurmdParameters=config_overrides
# Start batch jobs at once (by default each waits about 3 s for the next scheduling pass).
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
# A job depending on a failed job is cancelled instead of pending forever.
DependencyParameters=kill_invalid_depend
# Fast cancel, and no error about a missing mail program.
KillWait=5
MailProg=/bin/true
# A node whose slurmd comes back after a restart returns to service by itself.
ReturnToService=2
# Accounting through slurmdbd: sacct works (submitit polls it to see how jobs ended).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# A cheap per-job history file.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.txt
NodeName=$NODE CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

render_slurmdbd_conf() {
    cat <<EOF
# Written by slurm/dev/up.sh (development and CI only). Must stay mode 600: it holds a password.
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
# MariaDB runs with --skip-networking: "localhost" means its socket in $MYSQL_SOCKET_DIR.
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASSWORD
StorageLoc=$DB_NAME
EOF
}

write_configs() {
    local key=$MUNGE_DIR/munge.key
    if [[ ! -s $key ]]; then
        (umask 077 && head -c 1024 /dev/urandom >"$key")
        step "config: new munge key $key"
    fi
    chown munge:munge "$key"
    chmod 0400 "$key"

    local pass_file=$ETC_DIR/db-password
    [[ -s $pass_file ]] || (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pass_file")
    DB_PASSWORD=$(<"$pass_file")

    local changed=()
    render_slurm_conf | write_if_changed "$SLURM_CONF_FILE" 0644 && changed+=(slurm.conf)
    render_slurmdbd_conf | write_if_changed "$SLURMDBD_CONF_FILE" 0600 && changed+=(slurmdbd.conf)
    install -d -m 0755 "$(dirname "$SYSTEM_SLURM_CONF")"
    write_if_changed "$SYSTEM_SLURM_CONF" 0644 <"$SLURM_CONF_FILE" && changed+=("$SYSTEM_SLURM_CONF")
    if (( ${#changed[@]} )); then
        step "config: wrote ${changed[*]} ($CPUS CPUs, ${MEMORY_MB} MB)"
    else
        step "config: unchanged"
    fi
}

# The checksum of the config a daemon was started with, to restart it after a change.
conf_sum() { sha256sum "$1" | cut -d' ' -f1; }
started_sum_file() { echo "$RUN_DIR/$1.conf-sha256"; }

# Running with the current config: keep it. Running with an older one: stop it (caller starts).
keep_running() {
    local name=$1 conf=$2 pid
    pid=$(running_pid "$name") || return 1
    if [[ $(cat "$(started_sum_file "$name")" 2>/dev/null) == "$(conf_sum "$conf")" ]]; then
        step "$name: already running (pid $pid)"
        return 0
    fi
    step "$name: config changed, restarting"
    stop_daemon "$name"
    return 1
}

record_start() { conf_sum "$2" >"$(started_sum_file "$1")"; }

munge_works() { munge -n | unmunge; }

start_munged() {
    local pid
    pid=$(running_pid munged || find_procs munged | head -n1)
    if [[ -n $pid ]]; then
        # Never start a second munged beside a live one: it would take over the socket.
        step "munged: already running (pid $pid)"
    else
        rm -f "$(pid_file munged)"
        runuser -u munge -- munged --key-file="$MUNGE_DIR/munge.key" \
            --log-file="$MUNGE_DIR/munged.log" --pid-file="$(pid_file munged)" \
            --seed-file="$MUNGE_DIR/munged.seed" 9>&- ||
            { show_log "$MUNGE_DIR/munged.log"; die "munged did not start"; }
        step "munged: started"
    fi
    wait_for "$TIMEOUT_S" munge_works ||
        { show_log "$MUNGE_DIR/munged.log"; die "munge -n | unmunge does not work"; }
    step "munged: credentials work"
}

mysql_cmd() { "$1" --no-defaults --socket="$MYSQL_SOCKET" "${@:2}"; }

init_db_folder() {
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" \
        --auth-root-authentication-method=socket --skip-test-db >"$1" 2>&1 ||
        { show_log "$1"; die "mariadb-install-db failed"; }
    step "mariadbd: database folder initialised"
}

launch_mariadbd() {
    # Local socket only; small buffers (the accounting database holds a few rows per job).
    setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" \
        --socket="$MYSQL_SOCKET" --pid-file="$(pid_file mariadbd)" --log-error="$1" \
        --skip-networking --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
        --innodb-lock-wait-timeout=900 </dev/null >>"$1" 2>&1 9>&- &
    step "mariadbd: started"
}

start_mariadbd() {
    local log=$MYSQLD_DIR/mariadb.log pid
    if pid=$(running_pid mariadbd); then
        step "mariadbd: already running (pid $pid)"
    elif pid=$(find_procs mariadbd | head -n1) && [[ -n $pid ]]; then
        # A MariaDB started by the system (e.g. by its package on a machine with systemd):
        # use it when it answers on the standard socket; down.sh leaves it alone.
        mysql_cmd mariadb-admin ping >/dev/null 2>&1 ||
            die "a mariadbd not started by this script is running (pid $pid) and does not" \
                "answer on $MYSQL_SOCKET: stop it first"
        step "mariadbd: using the one already running (pid $pid, not started here)"
    else
        [[ -d $DB_DIR/mysql ]] || init_db_folder "$log"
        launch_mariadbd "$log"
    fi
    wait_for "$TIMEOUT_S" mysql_cmd mariadb-admin ping || { show_log "$log"; die "mariadbd not ready"; }
    mysql_cmd mariadb -e "CREATE USER IF NOT EXISTS '$DB_USER'@'localhost';
        ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
        GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" ||
        { show_log "$log"; die "could not create the accounting database user"; }
    step "mariadbd: ready"
}

dbd_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$DBD_PORT"); }

start_slurmdbd() {
    if ! keep_running slurmdbd "$SLURMDBD_CONF_FILE"; then
        # slurmdbd reads slurmdbd.conf from the folder of $SLURM_CONF.
        SLURM_CONF=$SLURM_CONF_FILE slurmdbd 9>&- || { show_log "$LOG_DIR/slurmdbd.log"; die "slurmdbd failed"; }
        record_start slurmdbd "$SLURMDBD_CONF_FILE"
        step "slurmdbd: started"
    fi
    wait_for "$TIMEOUT_S" dbd_listening ||
        { show_log "$LOG_DIR/slurmdbd.log"; die "slurmdbd is not listening on port $DBD_PORT"; }
    step "slurmdbd: listening on port $DBD_PORT"
}

controller_up() { scontrol ping | grep -q 'is UP'; }

start_slurmctld() {
    local restarted=1
    if keep_running slurmctld "$SLURM_CONF_FILE"; then
        restarted=0
    else
        slurmctld -f "$SLURM_CONF_FILE" 9>&- || { show_log "$LOG_DIR/slurmctld.log"; die "slurmctld failed"; }
        record_start slurmctld "$SLURM_CONF_FILE"
        step "slurmctld: started"
    fi
    wait_for "$TIMEOUT_S" controller_up ||
        { show_log "$LOG_DIR/slurmctld.log"; die "scontrol ping does not say UP"; }
    (( restarted )) && step "slurmctld: UP"
    return 0
}

# Ready when the node takes jobs; a node left down or drained by an earlier run is resumed.
node_ready() {
    local state
    state=$(sinfo -h -N -n "$NODE" -o %T)
    case $state in
        idle | mixed | allocated | completing) return 0 ;;
        down | drained | draining) scontrol update nodename="$NODE" state=resume ;;
    esac
    return 1
}

start_slurmd() {
    if ! keep_running slurmd "$SLURM_CONF_FILE"; then
        slurmd -N "$NODE" -f "$SLURM_CONF_FILE" 9>&- || { show_log "$LOG_DIR/slurmd.log"; die "slurmd failed"; }
        record_start slurmd "$SLURM_CONF_FILE"
        step "slurmd: started"
    fi
    wait_for "$TIMEOUT_S" node_ready ||
        { show_log "$LOG_DIR/slurmd.log"; die "node $NODE is not idle: $(sinfo -h -N -o '%T %E')"; }
    step "slurmd: node $NODE $(sinfo -h -N -n "$NODE" -o %T)"
}

job_completed_in_sacct() { [[ $(sacct -n -X -P -j "$1" -o State) == COMPLETED ]]; }

prove() {
    local out job_id
    # shellcheck disable=SC2016
    out=$(timeout "$TIMEOUT_S" srun -J tolpipe-up-check -N1 -n1 -t 1 \
        bash -c 'echo "ok $SLURM_JOB_ID"') ||
        { show_log "$LOG_DIR/slurmctld.log"; die "srun echo ok failed: $out"; }
    [[ $out =~ ^ok\ ([0-9]+)$ ]] || die "srun printed '$out', expected 'ok <job id>'"
    job_id=${BASH_REMATCH[1]}
    step "srun: ok (job $job_id)"
    wait_for "$TIMEOUT_S" job_completed_in_sacct "$job_id" ||
        { show_log "$LOG_DIR/slurmdbd.log"; die "sacct does not show job $job_id COMPLETED"; }
    step "sacct: job $job_id COMPLETED"
}

main() {
    check_environment
    # One up.sh at a time per state folder. Daemons are started with fd 9 closed (9>&-), or
    # they would hold the lock for ever.
    install -d -m 0755 "$STATE_DIR"
    exec 9>"$STATE_DIR/.up.lock"
    flock -w "$TIMEOUT_S" 9 || die "another up.sh holds $STATE_DIR/.up.lock"
    guard_real_cluster
    install_packages
    make_folders
    write_configs
    start_munged
    start_mariadbd
    start_slurmdbd
    start_slurmctld
    start_slurmd
    prove
    step "ready: partition '$PARTITION', $CPUS CPUs; state in $STATE_DIR; stop: bash slurm/dev/down.sh"
}

main
