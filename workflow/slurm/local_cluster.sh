#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, to run the pipeline through sbatch without a cluster.
#   workflow/slurm/local_cluster.sh start            start munged, slurmctld, slurmd (needs root and the packages:
#                                                    apt-get install -y slurmctld slurmd slurm-client munge)
#   workflow/slurm/local_cluster.sh run-smoke [DIR [GRID]]
#                                                    run a grid (default config/smoke.yaml) through the slurm
#                                                    profile in DIR
#   workflow/slurm/local_cluster.sh stop             stop the daemons it started (by pid file)
#   workflow/slurm/local_cluster.sh status           sinfo
# State, logs and slurm.conf go to $DGMBENCH_SLURM_DIR (default /tmp/dgmbench-slurm); export
# SLURM_CONF=$DGMBENCH_SLURM_DIR/slurm.conf to use sbatch/squeue/sinfo on it by hand.
# No accounting daemon: sacct does not work, so Snakemake polls with squeue (--slurm-status-command squeue).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${DGMBENCH_SLURM_DIR:-/tmp/dgmbench-slurm}"
export SLURM_CONF="$STATE/slurm.conf"
CPUS="${DGMBENCH_SLURM_CPUS:-2}"
NODE="$(hostname -s)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
SMOKE_TIMEOUT="${DGMBENCH_SLURM_TIMEOUT:-900}"
# Seconds before the first squeue poll after a change; the plugin then backs off (I, 2I+10, 3I+30, ... s after
# it), so I should cover a typical job: a stage of jobs that takes up to 2I+10 s is seen by the second poll.
POLL="${DGMBENCH_SLURM_POLL_SECONDS:-4}"

die() { echo "local_cluster: $*" >&2; exit 1; }

write_conf() {
    mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/log"
    cat > "$SLURM_CONF" <<CONF
ClusterName=dgmbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=16000 State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        || die "SLURM is not installed: apt-get install -y slurmctld slurmd slurm-client munge"
    [ "$(id -u)" = 0 ] || die "start needs root (slurmd runs jobs as their users)"
    write_conf
    # munge: the key is created by the Debian package; munged runs as user munge.
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -f /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; \
                                     chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    if ! alive /run/munge/munged.pid; then
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
        echo munged > "$STATE/started-munged"
    fi
    # Job steps do not see SLURM_CONF (the executor plugin's jobstep drops SLURM_* variables before `srun`),
    # so srun inside a job reads the default /etc/slurm/slurm.conf: link ours there, unless a real one exists.
    if [ -L /etc/slurm/slurm.conf ] || [ ! -e /etc/slurm/slurm.conf ]; then
        mkdir -p /etc/slurm && ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf && echo linked > "$STATE/linked-etc-conf"
    elif ! cmp -s /etc/slurm/slurm.conf "$SLURM_CONF"; then
        die "/etc/slurm/slurm.conf exists (a real cluster?); not replacing it"
    fi
    alive "$STATE/slurmctld.pid" || slurmctld -c -f "$SLURM_CONF"
    alive "$STATE/slurmd.pid" || slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do  # wait until the node accepts jobs
        if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "local_cluster: up (SLURM_CONF=$SLURM_CONF)"; return 0
        fi
        sleep 0.5
    done
    sinfo >&2 || true
    tail -20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    die "the node did not become idle"
}

stop() {
    for d in slurmd slurmctld; do
        if alive "$STATE/$d.pid"; then
            pid="$(cat "$STATE/$d.pid")"; kill "$pid"
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
    done
    if [ -f "$STATE/started-munged" ] && alive /run/munge/munged.pid; then  # only the munged we started
        kill "$(cat /run/munge/munged.pid)"; rm -f "$STATE/started-munged"
    fi
    if [ -f "$STATE/linked-etc-conf" ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ]; then
        rm -f /etc/slurm/slurm.conf "$STATE/linked-etc-conf"
    fi
    echo "local_cluster: stopped"
}

run_smoke() {
    local dir="${1:-$(mktemp -d /tmp/dgmbench-slurm-smoke.XXXXXX)}"
    local grid="${2:-$REPO/config/smoke.yaml}"
    [ -f "$grid" ] || die "no grid config $grid"
    grid="$(cd "$(dirname "$grid")" && pwd)/$(basename "$grid")"  # absolute: we cd into $dir below
    mkdir -p "$dir"
    echo "local_cluster: running $grid in $dir through sbatch" >&2
    cd "$dir"
    PATH="$(dirname "$PYTHON"):$PATH" timeout -s KILL "$SMOKE_TIMEOUT" \
        "$PYTHON" -m snakemake -s "$REPO/Snakefile" -d "$dir" --profile "$REPO/workflow/profiles/slurm" \
        --configfile "$grid" --jobs 4 --latency-wait 5 --retries 0 \
        --slurm-status-command squeue --slurm-init-seconds-before-status-checks "$POLL" --slurm-no-account \
        --slurm-keep-successful-logs --slurm-logdir "$dir/results/logs/slurm" \
        --default-resources runtime=30 mem_mb=1000 cpus_per_task=1 "slurm_partition=''"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    run-smoke) shift; run_smoke "$@" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
