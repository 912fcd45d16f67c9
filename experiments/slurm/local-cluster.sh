#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, to try the sbatch templates and sweeps and to run
# `make test-slurm`. Debian or Ubuntu, as root; no systemd needed (containers, CI).
#
#   experiments/slurm/local-cluster.sh start    # install slurm-wlm + munge if missing, configure, start
#   experiments/slurm/local-cluster.sh status   # sinfo
#   experiments/slurm/local-cluster.sh stop     # stop the daemons this script started (and no others)
#
# It writes /etc/slurm/slurm.conf for this host (one node with all its CPUs, one partition `local`) and
# refuses to replace a slurm.conf it did not write. Processes are tracked without cgroups; requeued jobs
# start again within ~15 s (AuthInfo cred_expire=10 and 2 s scheduling; SLURM defaults: 120 s and 30-60 s).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by phi1 experiments/slurm/local-cluster.sh"
STATE=/var/lib/slurm
LOGS=/var/log/slurm
MUNGE_PID=/run/munge/munged.pid
STARTED=/run/phi1-local-cluster.started  # the pid files of the daemons `start` launched: all `stop` touches

die() { echo "local-cluster.sh: $*" >&2; exit 2; }

answers() { timeout 5 sinfo -h >/dev/null 2>&1; }

install() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || die "slurmctld or munged missing and no apt-get: install slurm-wlm and munge"
    echo "installing slurm-wlm and munge with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends slurm-wlm munge >/dev/null; }
}

configure() {
    if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not replacing it"
    fi
    local host node
    host=$(hostname -s)
    # this machine as slurmd sees it: CPUs, sockets, cores, threads, memory
    node=$(slurmd -C | head -n 1 | sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/")
    mkdir -p /etc/slurm "$STATE/slurmctld" "$STATE/slurmd" "$LOGS"
    chown slurm:slurm "$STATE/slurmctld" "$LOGS"
    cat >"$CONF" <<EOF
$MARK
ClusterName=phi1-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [ "$(id -u)" = 0 ] || die "run as root (slurmd launches jobs)"
    if answers; then echo "SLURM already answers:"; sinfo; return; fi
    install
    configure
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! munge -n >/dev/null 2>&1; then
        runuser -u munge -- munged --pid-file="$MUNGE_PID" && echo "$MUNGE_PID munged" >>"$STARTED"
    fi
    pgrep -F /run/slurmctld.pid >/dev/null 2>&1 || { slurmctld && echo "/run/slurmctld.pid slurmctld" >>"$STARTED"; }
    pgrep -F /run/slurmd.pid >/dev/null 2>&1 || { slurmd && echo "/run/slurmd.pid slurmd" >>"$STARTED"; }
    for _ in $(seq 30); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then sinfo; return; fi
        sleep 1
    done
    die "started, but the node is not idle after 30 s: see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

stop_pid() {  # stop_pid PIDFILE NAME: the daemon of that pid file, if it is running
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
        echo "local-cluster.sh: $2 (pid $pid) still running" >&2
    fi
}

stop() {  # newest first: slurmd, slurmctld, then munged
    [ -f "$STARTED" ] || { echo "local-cluster.sh: no daemons started by this script"; return 0; }
    tac "$STARTED" | while read -r pidfile name; do stop_pid "$pidfile" "$name"; done
    rm -f "$STARTED"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
