#!/usr/bin/env bash
# The project's tested single-node Slurm recipe; called by scripts/slurm.sh.
# stop-slurm.sh - stop the daemons that start-slurm.sh started, by recorded PID
# (and only if that PID is still the same process: the kernel start time is
# checked, so a reused PID is never signalled). Daemons that start-slurm.sh
# found already running are left alone. Safe to run twice.
#
#   SLURM_CI_RUN=/run/slurm-ci   where start-slurm.sh recorded the PIDs
#   SLURM_CI_KEEP_JOBS=1         do not scancel jobs before stopping slurmctld
set -uo pipefail

RUN=${SLURM_CI_RUN:-/run/slurm-ci}
log() { printf '[stop-slurm %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }

# kernel start time of a live PID (empty when gone or a zombie awaiting reaping)
starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '$1 != "Z" {print $20}'; }

owned() {  # owned NAME -> prints PID if the recorded process is still alive
    local f="$RUN/$1.pid" pid st
    [ -f "$f" ] || return 1
    read -r pid st < "$f" || return 1
    if [ -n "${pid:-}" ] && [ -d "/proc/$pid" ] && [ "$(starttime "$pid")" = "$st" ]; then
        echo "$pid"; return 0
    fi
    rm -f "$f"; return 1
}

# the daemons' own pid files (left behind on exit; Debian's slurmctld prerm
# runs scancel when /run/slurmctld.pid exists, and fails if nobody answers)
declare -A PIDFILE=([munged]=/run/munge/munged.pid [slurmctld]=/run/slurmctld.pid
                    [slurmd]=/run/slurmd.pid [slurmdbd]=/run/slurmdbd.pid
                    [mariadbd]=/run/mysqld/mysqld.pid)

stop() {  # stop NAME
    local pid
    pid=$(owned "$1") || { log "$1: not started by start-slurm.sh or already gone"; return 0; }
    log "$1: SIGTERM pid $pid"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 150); do            # up to 15 s
        [ "$(starttime "$pid")" = "" ] && break
        sleep 0.1
    done
    if [ -n "$(starttime "$pid")" ]; then
        log "$1: still alive, SIGKILL pid $pid"
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$RUN/$1.pid"
    local f=${PIDFILE[$1]}
    if [ -f "$f" ] && [ "$(tr -dc '0-9' < "$f")" = "$pid" ]; then rm -f "$f"; fi
}

# Jobs in this cluster run under slurmstepd processes forked by the slurmd that
# start-slurm.sh started; cancel them through Slurm first so that none outlive
# the cluster.
if [ "${SLURM_CI_KEEP_JOBS:-0}" != 1 ] && owned slurmctld >/dev/null; then
    ids=$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
    if [ -n "${ids// /}" ]; then
        log "cancelling jobs: $ids"
        # shellcheck disable=SC2086
        scancel $ids 2>/dev/null
        for _ in $(seq 1 100); do
            [ -z "$(squeue -h -o '%i' 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

stop slurmd
stop slurmctld
stop slurmdbd
stop mariadbd
stop munged
log "done"
