#!/usr/bin/env bash
# A real Slurm cluster with two emulated nodes on this one machine, for tests (see shared notes).
#   scripts/slurm_local.sh install  install Debian's Slurm if missing (.ci/run does it before the suite)
#   scripts/slurm_local.sh start    install if missing, start munge + slurmctld + 2 slurmd
#   scripts/slurm_local.sh stop     cancel jobs, stop only the daemons this script started
#   scripts/slurm_local.sh env      print `export SLURM_CONF=...` for clients
# Why root and no systemd: CI runs as root in a container; the daemons run in the foreground under setsid.
set -euo pipefail
D=${DISTILL_SLURM_DIR:-/tmp/distill-slurm}
CONF=$D/slurm.conf
TAG="# distill-slurm-local"
CPUS=${DISTILL_SLURM_CPUS:-2}
MEM=${DISTILL_SLURM_MEM_MB:-8000}

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "slurm_local: need root to install Slurm" >&2; exit 3; }
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  mkdir -p "$D"/{state,spool,log}
  cat >"$CONF" <<CONF
ClusterName=distill
SlurmctldHost=localhost
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge.sock,cred_expire=10
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerParameters=bf_interval=1,sched_interval=2
DependencyParameters=kill_invalid_depend
DefMemPerCPU=$((MEM / CPUS))
MailProg=/bin/true
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
MpiDefault=none
NodeName=n[1-2] NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001-17002 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
CONF
}

start_bg() {  # name, command...: foreground daemon under setsid, pid recorded
  local name=$1; shift
  setsid "$@" >"$D/log/$name.out" 2>&1 < /dev/null &
  echo $! >"$D/$name.started"
}

start() {
  install
  if [ -f "$D/slurmctld.started" ] && kill -0 "$(cat "$D/slurmctld.started")" 2>/dev/null; then
    SLURM_CONF=$CONF sinfo -h >/dev/null 2>&1 && { echo "slurm_local: already running ($CONF)"; return 0; }
  fi
  write_conf
  grep -q "$TAG" /etc/hosts || echo "127.0.0.1 n1 n2 $TAG" >>/etc/hosts
  [ -f "$D/munge.key" ] || mungekey --create --keyfile="$D/munge.key" >/dev/null 2>&1
  chown munge:munge "$D/munge.key" && chmod 400 "$D/munge.key"
  mkdir -p "$D/munge" && chown munge:munge "$D/munge" "$D"
  start_bg munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground \
    --socket="$D/munge.sock" --key-file="$D/munge.key" --pid-file="$D/munge/munged.pid" \
    --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" --force
  for _ in $(seq 50); do [ -S "$D/munge.sock" ] && break; sleep 0.1; done
  start_bg slurmctld slurmctld -D -i -f "$CONF"
  start_bg slurmd-n1 slurmd -D -N n1 -f "$CONF"
  start_bg slurmd-n2 slurmd -D -N n2 -f "$CONF"
  for _ in $(seq 100); do
    [ "$(SLURM_CONF=$CONF sinfo -h -o '%t' 2>/dev/null | grep -c idle)" -ge 1 ] && \
      [ "$(SLURM_CONF=$CONF sinfo -h -N -o '%t' 2>/dev/null | grep -c idle)" -eq 2 ] && break
    sleep 0.2
  done
  SLURM_CONF=$CONF sinfo -N
}

stop() {
  [ -f "$CONF" ] && SLURM_CONF=$CONF scancel --quiet --full -u root 2>/dev/null || true
  for name in slurmd-n1 slurmd-n2 slurmctld munged; do
    f="$D/$name.started"
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  sed -i "/$TAG/d" /etc/hosts 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
