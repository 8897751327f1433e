#!/usr/bin/env bash
# A one-node SLURM cluster in a folder, for the tests marked `slurm` (make test-slurm):
#   scripts/local_slurm.sh install        apt-get install slurm-wlm munge, when missing (root)
#   scripts/local_slurm.sh start DIR      munged, slurmctld and slurmd with their state, logs and
#                                         pid files in DIR; waits until sinfo shows the node idle
#   scripts/local_slurm.sh stop DIR       stops the daemons started in DIR, by their pid files
#   scripts/local_slurm.sh run CMD...     start in a new temporary folder, run CMD with SLURM_CONF
#                                         and MAMMO_SLURM=1 set, stop the daemons whatever CMD did
# Clients then need SLURM_CONF=DIR/slurm.conf (and MUNGE's socket, which start puts in DIR).
set -euo pipefail

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "SLURM is not installed and this is not a root Debian machine: apt-get install slurm-wlm munge" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf() {
  local dir=$1 cpus
  cpus=$(nproc)
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat >"$dir/slurm.conf" <<EOF
ClusterName=mammo-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
KillWait=10
MinJobAge=600
NodeName=localhost CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

start_munge() {
  local dir=$1
  mkdir -p "$dir/munge"
  chown munge:munge "$dir/munge" && chmod 700 "$dir/munge"
  # as root munged refuses its log folder's ownership: it runs as the munge user
  runuser -u munge -- munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" --force
}

wait_idle() {
  local dir=$1
  for _ in $(seq 1 60); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; then
      return 0
    fi
    sleep 1
  done
  echo "the local SLURM node did not come up idle in 60 s; logs in $dir/log:" >&2
  tail -n 20 "$dir"/log/*.log >&2 || true
  return 1
}

start() {
  local dir
  dir=$(realpath "$1")
  chmod 755 "$dir"  # munged (the munge user) reaches its socket folder inside it
  write_conf "$dir"
  start_munge "$dir"
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  wait_idle "$dir"
  echo "local SLURM up: SLURM_CONF=$SLURM_CONF"
}

stop_pid() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  local dir=$1
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munge/munged.pid"
}

run() {
  local status=0
  RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mammo-slurm.XXXXXX")  # global: the EXIT trap reads it
  trap 'stop "$RUN_DIR"' EXIT
  start "$RUN_DIR"  # exports SLURM_CONF
  MAMMO_SLURM=1 "$@" || status=$?
  squeue -h -o '%i' | xargs -r scancel 2>/dev/null || true  # jobs a failed test left behind
  return "$status"
}

case "${1:-}" in
  install) install ;;
  start) start "$2" ;;
  stop) stop "$2" ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 install | start DIR | stop DIR | run CMD..." >&2; exit 2 ;;
esac
