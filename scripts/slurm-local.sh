#!/usr/bin/env bash
# A throwaway single-node SLURM cluster for this machine, for tests and for trying slurm/ by hand.
#
#   scripts/slurm-local.sh start  DIR [--cpus N] [--gpus N|auto]   start it (idempotent); prints export lines
#   scripts/slurm-local.sh stop   DIR                              cancel its jobs, stop its daemons (idempotent)
#   scripts/slurm-local.sh status DIR                              sinfo + squeue; exit 0 if it runs, 3 if not
#
#   eval "$(scripts/slurm-local.sh start /tmp/slurm)"      # sets SLURM_CONF=/tmp/slurm/slurm.conf in this shell
#   sbatch --wrap 'hostname'; squeue; ...
#   scripts/slurm-local.sh stop /tmp/slurm
#
# Everything lives under DIR: a munge key and munged (socket, pid, log), slurm.conf (SlurmctldHost=localhost, one
# node `localhost` with this machine's CPUs from nproc and its memory from /proc/meminfo minus headroom, partition
# `debug`, auth/munge, proctrack/linuxproc, task/none, select/cons_tres with CR_Core, no cgroups, no accounting,
# MpiDefault=pmix when the pmix plugin is installed), the controller state, slurmd's spool and the logs. Ports are
# picked at random among free ones below the ephemeral range, so several clusters (parallel test runs) can coexist.
# Nothing is exported and nothing outside DIR is touched: every command that should talk to this cluster needs
# SLURM_CONF=DIR/slurm.conf, which `start` prints as `export SLURM_CONF=...` on stdout (messages go to stderr).
#
# Runs as root (SlurmUser=root, the case on CI machines and containers without systemd); as another user the
# daemons run as that user and can only run that user's jobs. Needs the Debian packages slurmctld, slurmd,
# slurm-client and munge (scripts/setup-deps.sh installs them); nothing is started through systemd.
# `stop` signals only the daemons whose pid files are under DIR (checked against their command lines), after
# cancelling this cluster's jobs; leftover job-step daemons of this cluster are found through their SLURM_CONF.
# --cpus N advertises N CPUs (more than the real ones is allowed: SlurmdParameters=config_overrides).
# --gpus N|auto adds a gres `gpu:N` backed by /dev/nvidia0..N-1 (auto: count them); default none.
set -euo pipefail

prog="slurm-local.sh"
die() { echo "$prog: error: $*" >&2; exit 1; }
say() { echo "$prog: $*" >&2; }

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd="$1"
dir_arg="$2"
shift 2
cpus_opt="" gpus_opt="0"
while [ $# -gt 0 ]; do
  case "$1" in
    --cpus) [ $# -ge 2 ] || die "--cpus needs a value"; cpus_opt="$2"; shift 2 ;;
    --cpus=*) cpus_opt="${1#*=}"; shift ;;
    --gpus) [ $# -ge 2 ] || die "--gpus needs a value"; gpus_opt="$2"; shift 2 ;;
    --gpus=*) gpus_opt="${1#*=}"; shift ;;
    *) die "unknown option '$1' (see: $prog with no arguments)" ;;
  esac
done
case "$cmd" in start|stop|status) ;; *) usage ;; esac

mkdir -p "$dir_arg" 2>/dev/null || die "cannot create '$dir_arg'"
D="$(cd "$dir_arg" && pwd -P)"
CONF="$D/slurm.conf"
MSOCK="$D/munge/munge.socket.2"
PIDS=("$D/run/slurmd.pid" "$D/run/slurmctld.pid" "$D/munge/munged.pid")  # stop order

# ---- helpers ----------------------------------------------------------------------------------------------------
need() {  # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ||
    die "'$1' is not installed (Debian package '$2'; scripts/setup-deps.sh installs it:" \
        "apt-get install -y slurmctld slurmd slurm-client munge)"
}
cmd_path() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

# pid_of PIDFILE: prints the pid if that process is alive and was started for this DIR (its command line names a
# path under DIR), so a stale pid file or a recycled pid is never mistaken for one of our daemons.
pid_of() {
  local f="$1" pid
  [ -s "$f" ] || return 1
  pid="$(tr -dc '0-9' < "$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF -- "$D/" || return 1
  echo "$pid"
}

running_all() { local f; for f in "${PIDS[@]}"; do pid_of "$f" >/dev/null || return 1; done; }
running_any() { local f; for f in "${PIDS[@]}"; do pid_of "$f" >/dev/null && return 0; done; return 1; }

# Waits up to $2 seconds (0.1 s steps) for pid $1 to go away.
wait_gone() {
  local pid="$1" n=$(( $2 * 10 ))
  while [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ] && [ $n -gt 0 ]; do
    sleep 0.1; n=$((n - 1))
  done
  [ ! -d "/proc/$pid" ] || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = "Z" ]
}

stop_pid() {  # stop_pid PID NAME: TERM, wait up to 10 s, then KILL
  local pid="$1" name="$2"
  kill -TERM "$pid" 2>/dev/null || return 0
  if ! wait_gone "$pid" 10; then
    say "$name (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || say "$name (pid $pid) is still there"
  fi
}

log_tails() {
  local f
  for f in "$D/log/slurmctld.log" "$D/log/slurmd.log" "$D/munge/munged.log" "$D/log/start.out"; do
    [ -s "$f" ] || continue
    echo "---- tail of $f" >&2
    tail -n 25 "$f" >&2
  done
}

# Ports in LISTEN state (hex in /proc/net/tcp*), as decimal numbers, one per line.
listening_ports() {
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk 'NR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' |
    while read -r h; do echo $((16#$h)); done
}

pick_ports() {  # sets CTLD_PORT and SLURMD_PORT: two free consecutive ports below the ephemeral range
  local lo=10000 hi eph_lo used p tries=0
  eph_lo="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
  hi=$(( eph_lo > lo + 1000 ? eph_lo - 2 : 30000 ))
  used=" $(listening_ports | tr '\n' ' ') "
  while :; do
    p=$(( lo + (RANDOM * 32768 + RANDOM) % (hi - lo) ))
    case "$used" in *" $p "*|*" $((p + 1)) "*) ;; *) break ;; esac
    tries=$((tries + 1)); [ $tries -lt 1000 ] || die "found no free port pair in $lo-$hi"
  done
  CTLD_PORT=$p SLURMD_PORT=$((p + 1))
}

plugin_dir() {
  local d
  for d in /usr/lib/x86_64-linux-gnu/slurm-wlm /usr/lib/aarch64-linux-gnu/slurm-wlm /usr/lib64/slurm \
           /usr/lib/slurm /usr/local/lib/slurm; do
    [ -e "$d/auth_munge.so" ] && { echo "$d"; return 0; }
  done
  local f; f="$(ls /usr/lib/*/slurm-wlm/auth_munge.so 2>/dev/null | head -1)"
  [ -n "$f" ] && dirname "$f"
}

check_opts() {  # sets CPUS and NGPU
  CPUS="${cpus_opt:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"  # nproc obeys OMP_NUM_THREADS
  [[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive integer (got '$CPUS')"
  NGPU="$gpus_opt"
  if [ "$NGPU" = auto ]; then
    NGPU=0
    while [ -e "/dev/nvidia$NGPU" ]; do NGPU=$((NGPU + 1)); done
  fi
  [[ "$NGPU" =~ ^[0-9]+$ ]] || die "--gpus must be a number or 'auto' (got '$gpus_opt')"
  if [ "$NGPU" -gt 0 ] && [ ! -e "/dev/nvidia$((NGPU - 1))" ]; then
    die "--gpus $NGPU: /dev/nvidia$((NGPU - 1)) does not exist"
  fi
}

write_conf() {
  local cpus="$CPUS" ngpu="$NGPU" mem_kb mem_mb head user gres_line="" gres_types="" pdir mpi="none"
  mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
  mem_mb=$(( mem_kb / 1024 ))
  head=$(( mem_mb / 10 > 1024 ? mem_mb / 10 : 1024 ))   # leave 10% (at least 1 GiB) to the system
  mem_mb=$(( mem_mb - head > 256 ? mem_mb - head : 256 ))
  user="$(id -un)"
  pdir="$(plugin_dir || true)"
  if [ -n "$pdir" ] && [ -e "$pdir/mpi_pmix.so" ]; then mpi=pmix; fi
  rm -f "$D/gres.conf"
  local first_job=$(( (RANDOM % 30000 + 1) * 100 ))
  printf 'PMIxCliTmpDirBase=%s\n' "$D/tmp" > "$D/mpi.conf"
  if [ "$ngpu" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    gres_line=" Gres=gpu:$ngpu"
    echo "NodeName=localhost Name=gpu File=/dev/nvidia[0-$((ngpu - 1))]" > "$D/gres.conf"
  fi
  cat > "$CONF.new" <<EOF
# Generated by scripts/slurm-local.sh for a throwaway single-node cluster under $D. Regenerated by every start.
ClusterName=moesae-local
SlurmctldHost=localhost
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
# cred_expire: step-credential lifetime; also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MSOCK,cred_expire=10
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no systemd: processes tracked through their parents, no task affinity/confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# start array tasks at once (the default waits 3 s between waves), and look at pending jobs every second (a
# requeued job becomes eligible cred_expire s later; nothing else wakes the scheduler then)
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
MpiDefault=$mpi
# per-cluster temp dirs and job ids: PMIx names its directories after the job id (…/spmix_appdir_<uid>_<job>.<step>),
# so two clusters on one machine must neither share TmpFS nor count their jobs from the same number
TmpFS=$D/tmp
FirstJobId=$first_job
$gres_types
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
# SIGTERM -> SIGKILL grace on cancel/time limit: long enough for a training checkpoint
KillWait=20
# finished jobs stay visible (scontrol show job, squeue -t all) for 5 min
MinJobAge=300
MaxArraySize=10001
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb$gres_line State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  mv "$CONF.new" "$CONF"
}

start_munged() {
  local key="$D/munge/munge.key" n
  if [ ! -s "$key" ]; then
    if command -v mungekey >/dev/null 2>&1 || [ -x /usr/sbin/mungekey ]; then
      "$(cmd_path mungekey)" --create --keyfile="$key.new" --bits=1024 >/dev/null 2>&1 ||
        head -c 1024 /dev/urandom > "$key.new"
    else
      head -c 1024 /dev/urandom > "$key.new"
    fi
    chmod 400 "$key.new"
    mv "$key.new" "$key"
  fi
  rm -f "$MSOCK" "$MSOCK.lock"
  # --force: munged wants every directory above its socket to be world-executable (mktemp -d makes 0700 ones)
  "$(cmd_path munged)" --force --socket="$MSOCK" --key-file="$key" --pid-file="$D/munge/munged.pid" \
    --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" >> "$D/log/start.out" 2>&1 ||
    { log_tails; die "munged did not start"; }
  for n in $(seq 50); do
    if munge -n -S "$MSOCK" 2>/dev/null | unmunge -S "$MSOCK" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log_tails
  die "munged does not answer on $MSOCK"
}

# Starts slurmctld and slurmd and waits (up to 20 s) for the node to be idle. Returns 2 if a daemon could not bind
# its port (the caller picks new ports), 1 on other failures.
start_slurm() {
  local n state
  SLURM_CONF="$CONF" "$(cmd_path slurmctld)" -c -f "$CONF" >> "$D/log/start.out" 2>&1 || return 1
  SLURM_CONF="$CONF" "$(cmd_path slurmd)" -f "$CONF" -N localhost >> "$D/log/start.out" 2>&1 || return 1
  for n in $(seq 200); do
    state="$(SLURM_CONF="$CONF" sinfo -h -o %T 2>/dev/null || true)"
    case "$state" in idle*|mixed*|allocated*) return 0 ;; esac
    if grep -qs "Address already in use" "$D/log/slurmctld.log" "$D/log/slurmd.log"; then return 2; fi
    if [ $n -gt 20 ] && ! pid_of "$D/run/slurmctld.pid" >/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

stop_daemons() {  # the slurm daemons (not munged)
  local pid
  if pid="$(pid_of "$D/run/slurmd.pid")"; then stop_pid "$pid" slurmd; fi
  if pid="$(pid_of "$D/run/slurmctld.pid")"; then stop_pid "$pid" slurmctld; fi
}

# Job-step daemons (slurmstepd) of this cluster left behind by a stopped slurmd: they inherited SLURM_CONF=$CONF.
leftover_stepds() {
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' < "$p/cmdline" | grep -q '^slurmstepd'; } 2>/dev/null || continue
    { tr '\0' '\n' < "$p/environ" | grep -qxF "SLURM_CONF=$CONF"; } 2>/dev/null || continue
    echo "${p#/proc/}"
  done
}

descendants() {  # descendants PID: every process below PID (children first seen, then theirs)
  local todo="$1" next p kids="" st
  local -A parent=()
  for p in /proc/[0-9]*; do
    st="$(cat "$p/stat" 2>/dev/null)" || continue
    st="${st##*) }"                  # after "pid (comm) ": "state ppid ..."
    st="${st#* }"
    parent[${p#/proc/}]="${st%% *}"
  done
  while [ -n "$todo" ]; do
    next=""
    for p in "${!parent[@]}"; do
      case " $todo " in *" ${parent[$p]} "*) kids+=" $p"; next+=" $p" ;; esac
    done
    todo="${next# }"
  done
  echo $kids
}

print_env() { echo "export SLURM_CONF=$CONF"; }

# ---- commands ---------------------------------------------------------------------------------------------------
do_start() {
  need munged munge; need munge munge; need unmunge munge
  need slurmctld slurmctld; need slurmd slurmd
  need sinfo slurm-client; need sbatch slurm-client; need scontrol slurm-client; need squeue slurm-client
  if running_all && SLURM_CONF="$CONF" sinfo -h >/dev/null 2>&1; then
    say "already running under $D"
    print_env
    return 0
  fi
  check_opts
  [ ${#MSOCK} -lt 100 ] || die "DIR is too long for a unix socket path ($MSOCK); use a shorter DIR"
  if running_any; then say "a previous start under $D is half up: stopping it first"; do_stop; fi
  # any failure from here on stops whatever this start brought up
  trap 'rc=$?; if [ $rc -ne 0 ]; then do_stop >/dev/null 2>&1; fi; exit $rc' EXIT
  mkdir -p "$D/munge" "$D/state" "$D/spool" "$D/log" "$D/run" "$D/tmp"
  chmod 700 "$D/munge"
  : > "$D/log/start.out"
  start_munged
  local attempt rc
  for attempt in 1 2 3; do
    pick_ports
    write_conf
    rm -f "$D/log/slurmctld.log" "$D/log/slurmd.log"
    rc=0; start_slurm || rc=$?
    [ $rc -eq 0 ] && break
    if [ $rc -eq 2 ] && [ $attempt -lt 3 ]; then
      say "port $CTLD_PORT or $SLURMD_PORT was taken meanwhile: retrying with others"
      stop_daemons
      continue
    fi
    log_tails
    die "SLURM did not come up under $D (logs above; config $CONF)"
  done
  say "up: node localhost ($(SLURM_CONF="$CONF" sinfo -h -N -o '%c CPUs, %m MB' | head -1)), partition debug," \
      "ports $CTLD_PORT/$SLURMD_PORT, MpiDefault=$(awk -F= '/^MpiDefault=/{print $2}' "$CONF")"
  trap - EXIT
  print_env
}

do_stop() {
  local pid jobs n
  if [ -f "$CONF" ] && pid_of "$D/run/slurmctld.pid" >/dev/null; then
    jobs="$(SLURM_CONF="$CONF" squeue -h -o %F 2>/dev/null | sort -u || true)"  # %F: array job id
    if [ -n "$jobs" ]; then
      say "cancelling this cluster's jobs: $(echo $jobs)"
      # shellcheck disable=SC2086
      SLURM_CONF="$CONF" scancel $jobs 2>/dev/null || true
      for n in $(seq 150); do  # up to 15 s for them to end (KillWait is 20 s: a checkpoint may be in progress)
        [ -z "$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  stop_daemons
  for pid in $(leftover_stepds); do
    say "killing leftover slurmstepd (pid $pid) of this cluster and its job processes:" $(descendants "$pid")
    kill -KILL "$pid" $(descendants "$pid") 2>/dev/null || true
  done
  if pid="$(pid_of "$D/munge/munged.pid")"; then stop_pid "$pid" munged; fi
  rm -f "$D/run/slurmd.pid" "$D/run/slurmctld.pid" "$D/munge/munged.pid"
  say "stopped (if it was running) under $D"
}

do_status() {
  if ! running_any; then echo "no local SLURM cluster running under $D"; return 3; fi
  local f name
  for f in "${PIDS[@]}"; do
    name="$(basename "$f" .pid)"
    if pid="$(pid_of "$f")"; then echo "$name: running (pid $pid)"; else echo "$name: NOT running"; fi
  done
  SLURM_CONF="$CONF" sinfo || return 1
  SLURM_CONF="$CONF" squeue || true
  running_all || return 1
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
esac
