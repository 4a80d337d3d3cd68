# shellcheck shell=bash disable=SC2034  # sourced: its variables are used by up.sh and down.sh
# Shared by up.sh and down.sh: paths, step lines with elapsed time, process checks.
# Sourced, not executed.

# Every file of the development Slurm lives under one folder: one place to look, one to clean.
STATE_DIR=${TOLPIPE_SLURM_DIR:-${TMPDIR:-/tmp}/tolpipe-slurm}
ETC_DIR=$STATE_DIR/etc
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
SPOOL_DIR=$STATE_DIR/spool
MUNGE_DIR=$STATE_DIR/munge
DB_DIR=$STATE_DIR/mysql

SLURM_CONF_FILE=$ETC_DIR/slurm.conf
SLURMDBD_CONF_FILE=$ETC_DIR/slurmdbd.conf
# Client commands (sbatch, srun, sacct, dask-jobqueue) read the system path; a copy lives there.
SYSTEM_SLURM_CONF=/etc/slurm/slurm.conf
# First line of every slurm.conf these scripts write; a slurm.conf without it is not ours.
MARKER="# tolpipe-dev-slurm: written by slurm/dev/up.sh for development and CI only."

# Sockets at the paths every client library looks at by default.
MUNGE_SOCKET_DIR=/run/munge
MYSQL_SOCKET_DIR=/run/mysqld
MYSQL_SOCKET=$MYSQL_SOCKET_DIR/mysqld.sock

# Daemons in start order; down.sh stops them in reverse.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

# Munged and mariadbd drop root before writing their pid files: they get folders of their own.
MYSQLD_DIR=$STATE_DIR/mysqld
pid_file() {
    case $1 in
        munged) echo "$MUNGE_DIR/munged.pid" ;;
        mariadbd) echo "$MYSQLD_DIR/mariadbd.pid" ;;
        *) echo "$RUN_DIR/$1.pid" ;;
    esac
}

_now_us() { local t=${EPOCHREALTIME//[.,]/}; echo "$t"; }
T0_US=$(_now_us)

# One line per step: "[  1.2s] what happened".
step() {
    local us=$(( $(_now_us) - T0_US ))
    printf '[%4d.%01ds] %s\n' $(( us / 1000000 )) $(( us / 100000 % 10 )) "$*"
}

die() {
    step "ERROR: $*" >&2
    exit 1
}

# True when PID is a live process (not a zombie: daemons re-parented to PID 1 are never reaped
# on machines without an init, and `kill -0` succeeds on zombies) whose program is NAME.
# Builtins only (no subshells): find_procs calls it for every process.
proc_running() {
    local pid=$1 name=$2 stat="" rest state arg0=""
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
    rest=${stat##*) }
    state=${rest%% *}
    [[ $state != Z && $state != X ]] || return 1
    IFS= read -r -d '' arg0 2>/dev/null <"/proc/$pid/cmdline" || [[ -n $arg0 ]] || return 1
    [[ ${arg0##*/} == "$name" ]]
}

# PID from NAME's pid file when that process is running, else nothing (status 1).
running_pid() {
    local name=$1 file pid
    file=$(pid_file "$name")
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    proc_running "$pid" "$name" || return 1
    echo "$pid"
}

# All running (non-zombie) processes whose program is NAME, one PID a line.
find_procs() {
    local name=$1 dir pid
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        proc_running "$pid" "$name" && echo "$pid"
    done
    return 0
}

_not_running() { ! proc_running "$1" "$2"; }

# Stop NAME if its pid file names a running process: TERM, then KILL after a deadline.
stop_daemon() {
    local name=$1 grace=${2:-30} pid
    if ! pid=$(running_pid "$name"); then
        rm -f "$(pid_file "$name")"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$grace" _not_running "$pid" "$name"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 10 _not_running "$pid" "$name" || die "$name (pid $pid) survived SIGKILL"
    fi
    rm -f "$(pid_file "$name")"
    step "$name: stopped (pid $pid)"
}

# Poll CMD until it succeeds or TIMEOUT seconds pass (never a fixed sleep).
wait_for() {
    local timeout=$1; shift
    local deadline=$(( $(_now_us) + timeout * 1000000 ))
    until "$@" >/dev/null 2>&1; do
        (( $(_now_us) < deadline )) || return 1
        sleep 0.1
    done
}

# The last lines of a log file, to explain a failure.
show_log() {
    [[ -r $1 ]] || return 0
    echo "---- last lines of $1 ----" >&2
    tail -n 20 "$1" >&2
}
