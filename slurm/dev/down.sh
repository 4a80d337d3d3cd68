#!/usr/bin/env bash
# Stop the single-node development Slurm started by slurm/dev/up.sh: only the daemons whose pid
# files it wrote (a munged it found already running is left alone). See slurm/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash slurm/dev/down.sh [--purge]

Cancels the jobs, then stops slurmd, slurmctld, slurmdbd, mariadbd and munged (those that
slurm/dev/up.sh started), newest first.

  --purge   also delete the state folder (accounting database, logs, spool) and the
            /etc/slurm/slurm.conf that up.sh wrote
EOF
}

PURGE=0
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $(id -u) == 0 ]] || die "run as root"

no_jobs_left() { [[ -z $(squeue -h -o %i 2>/dev/null) ]]; }

cancel_jobs() {
    running_pid slurmctld >/dev/null || return 0
    if ! no_jobs_left; then
        # shellcheck disable=SC2046
        scancel --full --quiet $(squeue -h -o %i) 2>/dev/null || true
        wait_for 30 no_jobs_left || step "jobs: some did not end in 30 s: $(squeue -h -o '%i %T')"
        step "jobs: cancelled"
    fi
    return 0
}

# Job steps outlive slurmd; end those of our slurmd (their parent is gone once it stops).
stop_job_steps() {
    local pid
    for pid in $(find_procs slurmstepd); do
        kill -KILL "$pid" 2>/dev/null || true
        step "slurmstepd: killed (pid $pid)"
    done
}

main() {
    local slurmd_was_ours=0 i
    running_pid slurmd >/dev/null && slurmd_was_ours=1
    cancel_jobs
    for (( i = ${#DAEMONS[@]} - 1; i >= 0; i-- )); do
        stop_daemon "${DAEMONS[i]}"
    done
    (( slurmd_was_ours )) && stop_job_steps
    if (( PURGE )); then
        if [[ -f $SYSTEM_SLURM_CONF ]] && grep -qxF "$MARKER" "$SYSTEM_SLURM_CONF"; then
            rm -f "$SYSTEM_SLURM_CONF"
            step "purge: removed $SYSTEM_SLURM_CONF"
        fi
        if [[ -d $STATE_DIR ]]; then
            # Delete only a folder that up.sh filled.
            grep -qxF "$MARKER" "$SLURM_CONF_FILE" 2>/dev/null ||
                die "$STATE_DIR has no slurm.conf written by up.sh: not deleting it"
            rm -rf "$STATE_DIR"
            step "purge: removed $STATE_DIR"
        fi
    fi
    step "down"
}

main
