#!/usr/bin/env bash
# scripts/slurm.sh start|stop — a single-node Slurm 22.05 (Debian's slurm-wlm + munge) on
# 127.0.0.1 for the Slurm plugin's tests (tests/interop/test_slurm.py). `start` installs the
# packages when missing and starts munged, slurmctld and slurmd; it prints STARTED when it started
# the controller, so scripts/test.sh knows to stop it again. `stop` stops only the daemons that
# `start` started, by recorded PID (lib/slurm-stop.sh). No slurmdbd: final states come from
# `sacct -c` (jobcomp/filetxt), see docs/site-admin/slurm.md.
source "$(dirname "$0")/lib/common.sh"

# 8 advertised CPUs on a 2-core box: pilots mostly wait on the server, and the 20-job test wants
# several at once. Override with SLURM_CI_CPUS.
export SLURM_CI_CPUS="${SLURM_CI_CPUS:-8}"

ctld_up() { command -v scontrol >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP'; }

case "${1:-start}" in
  start)
    if ctld_up && sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)$'; then
      exit 0
    fi
    was_up=0; ctld_up && was_up=1
    say "starting Slurm (single node)"
    as_root env SLURM_CI_CPUS="$SLURM_CI_CPUS" bash "$ROOT/scripts/lib/slurm-start.sh"
    [ "$was_up" = 0 ] && echo STARTED
    ;;
  stop)
    as_root bash "$ROOT/scripts/lib/slurm-stop.sh"
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
