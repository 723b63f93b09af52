#!/usr/bin/env bash
# A real one-node SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) for the fvc tests.
#
#   tests/slurm/cluster.sh start    install what is missing, write the configs, start what is not running,
#                                   register the accounting cluster/account/user, wait for the node to be idle
#   tests/slurm/cluster.sh status   which daemons run (exit 0 only when all run and the node answers)
#   tests/slurm/cluster.sh stop     stop exactly the daemons this script started (by their pid files)
#
# For Debian 12 machines where PID 1 is not systemd: every daemon is started by hand, as root.
# Memory caps: cgroup (v1 memory controller writable) or, failing that, sampled polling (OverMemoryKill).
# Environment: FVC_SLURM_STATE (default /var/tmp/fvc-slurm), FVC_SLURM_MEMORY_MODE=cgroup|poll (default:
# detected), FVC_SLURM_ACCOUNT (default fvc), FVC_SLURM_PARTITION (default debug), FVC_SLURM_GPU_PARTITION
# (default gpu: a second partition over the same node, for GPU work), FVC_SLURM_GPUS (default 2).
# GPUs as SLURM sees them: GRES `gpu` on the node, backed by device files /dev/fvc_fake_gpuN that the script
# creates (character devices with /dev/null's numbers; plain files where mknod is refused). SLURM allocates
# them, sets CUDA_VISIBLE_DEVICES in the job and accounts gres/gpu in AllocTRES; torch sees no GPU.
set -euo pipefail

ROOT=$(cd "${BASH_SOURCE[0]%/*}/../.." && pwd)
STATE=${FVC_SLURM_STATE:-/var/tmp/fvc-slurm}
ACCOUNT=${FVC_SLURM_ACCOUNT:-fvc}
PARTITION=${FVC_SLURM_PARTITION:-debug}
GPUS=${FVC_SLURM_GPUS:-2}
GPU_PARTITION=${FVC_SLURM_GPU_PARTITION:-gpu}
FAKE_GPU=/dev/fvc_fake_gpu
CLUSTER=fvc
CONF_DIR=/etc/slurm
DB_PASS=fvc-slurmdbd
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client)

log() { echo "cluster.sh: $*" >&2; }

# A process exists and is not a zombie.
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

# A pid file names a live process of the expected program.
alive() {
    local pidfile=$STATE/run/$1.pid pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    running "$pid" && [[ $(</proc/"$pid"/comm) == "$1"* ]]
}

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    "$BASH" "$ROOT/scripts/apt_install.sh" "${missing[@]}"  # waits for apt's lock, doesn't fail on it
}

# A digest of the configuration files; empty input (files not written yet) is a digest too.
config_digest() { cat "$CONF_DIR"/{slurm,cgroup,slurmdbd,gres}.conf 2>/dev/null | md5sum || true; }

# The device files behind the GRES: slurmd only checks that each File= exists.
make_fake_gpus() {
    local i
    for ((i = 0; i < GPUS; i++)); do
        [[ -e $FAKE_GPU$i ]] || mknod -m 666 "$FAKE_GPU$i" c 1 3 2>/dev/null || touch "$FAKE_GPU$i"
    done
}

# cgroup when the v1 memory controller lets us create a group and set its limit, else poll.
memory_mode() {
    if [[ -n ${FVC_SLURM_MEMORY_MODE:-} ]]; then
        echo "$FVC_SLURM_MEMORY_MODE"
        return
    fi
    local probe=/sys/fs/cgroup/memory/fvc_slurm_probe.$$
    if [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/freezer ]] && mkdir "$probe" 2>/dev/null; then
        if echo 104857600 >"$probe/memory.limit_in_bytes" 2>/dev/null; then
            rmdir "$probe"
            echo cgroup
            return
        fi
        rmdir "$probe"
    fi
    echo poll
}

write_configs() {
    local mode=$1 host node real_mem
    host=$(hostname -s)
    node=$(slurmd -C | head -n1)
    real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    real_mem=$((real_mem * 95 / 100))
    node=$(sed -e "s/RealMemory=[0-9]*/RealMemory=$real_mem/" -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" <<<"$node")
    mkdir -p "$CONF_DIR" "$STATE"/{run,log,ctld,slurmd}
    local tmp
    tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
    {
        cat <<EOF
# Written by tests/slurm/cluster.sh (memory mode: $mode).
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerParameters=batch_sched_delay=0
KillWait=5
MinJobAge=300
InactiveLimit=0
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
GresTypes=gpu
AccountingStorageTRES=gres/gpu
EOF
        if [[ $mode == cgroup ]]; then
            echo "ProctrackType=proctrack/cgroup"
            echo "TaskPlugin=task/cgroup"
        else
            echo "ProctrackType=proctrack/linuxproc"
            echo "TaskPlugin=task/none"
            echo "JobAcctGatherParams=OverMemoryKill"
        fi
        echo "$node Gres=gpu:$GPUS"
        echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
        echo "PartitionName=$GPU_PARTITION Nodes=ALL MaxTime=INFINITE State=UP"
    } >"$tmp"
    chmod 644 "$tmp"
    mv "$tmp" "$CONF_DIR/slurm.conf"
    echo "Name=gpu File=$FAKE_GPU[0-$((GPUS - 1))]" >"$CONF_DIR/gres.conf"
    cat >"$CONF_DIR/cgroup.conf" <<EOF
CgroupPlugin=autodetect
ConstrainRAMSpace=yes
ConstrainCores=yes
ConstrainSwapSpace=no
EOF
    umask 077
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    umask 022
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

# Start a daemon in its own session, logging to the state dir; $1 is the pid file name.
launch() {
    local name=$1
    shift
    setsid nohup "$@" >>"$STATE/log/$name.out" 2>&1 </dev/null 9>&- &
    echo $! >"$STATE/run/$name.pid"
}

wait_for() {
    local what=$1 tries=$2
    shift 2
    for ((i = 0; i < tries; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    log "timed out waiting for $what (logs under $STATE/log)"
    return 1
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    # munged forks and writes its own pid file (as user munge); copy it where `stop` looks.
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged --force >>"$STATE/log/munged.out" 2>&1 9>&-
    wait_for munged 20 bash -c 'munge -n </dev/null | unmunge'
    cp /run/munge/munged.pid "$STATE/run/munged.pid"
}

sql() { mariadb --protocol=socket -uroot -e "$1"; }

start_mariadb() {
    if mariadb-admin --protocol=socket -uroot ping >/dev/null 2>&1; then
        log "MariaDB already answers; using it"
    else
        mkdir -p /run/mysqld
        chown mysql:mysql /run/mysqld
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        fi
        launch mariadbd mariadbd --user=mysql --innodb-buffer-pool-size=1024M \
            --innodb-lock-wait-timeout=900
        wait_for MariaDB 60 mariadb-admin --protocol=socket -uroot ping
    fi
    sql "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
         CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

register_accounting() {
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i -Q add account "$ACCOUNT" Cluster="$CLUSTER" Description=fvc Organization=fvc >/dev/null 2>&1 || true
    sacctmgr -i -Q add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i -Q modify user root set DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true
    sacctmgr -n -P show assoc where user=root account="$ACCOUNT" format=Account | grep -qx "$ACCOUNT"
}

node_idle() { sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'; }

start() {
    install_packages
    mkdir -p "$STATE/run" "$STATE/log"
    exec 9>"$STATE/lock"
    flock 9
    local mode before
    if alive slurmctld && [[ -s $STATE/mode ]]; then mode=$(<"$STATE/mode"); else mode=$(memory_mode); fi
    before=$(config_digest)
    make_fake_gpus
    write_configs "$mode"
    echo "$mode" >"$STATE/mode"
    if alive slurmctld && [[ $before != $(config_digest) ]]; then
        log "configuration changed: scontrol reconfigure"
        scontrol reconfigure
    fi
    start_munge
    start_mariadb
    if ! alive slurmdbd; then
        rm -f /run/slurmdbd.pid
        launch slurmdbd slurmdbd -D
        wait_for slurmdbd 60 sacctmgr -n show cluster
    fi
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    if ! alive slurmctld; then
        rm -f /run/slurmctld.pid
        launch slurmctld slurmctld -D -i
        wait_for slurmctld 60 scontrol ping
    fi
    register_accounting
    if ! alive slurmd; then
        rm -f /run/slurmd.pid
        launch slurmd slurmd -D
    fi
    wait_for "node idle" 60 node_idle
    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
    log "cluster up: memory enforcement = $mode ($( [[ $mode == cgroup ]] \
        && echo 'cgroup v1: over-limit jobs end OUT_OF_MEMORY' \
        || echo 'polling OverMemoryKill: over-limit jobs end FAILED 0:9 after a short overshoot'))"
    sinfo -N -o '%N %t %c %m %P' >&2
}

status() {
    local ok=0
    for d in "${DAEMONS[@]}"; do
        if alive "$d"; then
            echo "$d: running (pid $(<"$STATE/run/$d.pid"))"
        else
            echo "$d: not started by this script"
            [[ $d == mariadbd || $d == munged ]] || ok=1
        fi
    done
    [[ -s $STATE/mode ]] && echo "memory enforcement: $(<"$STATE/mode")"
    if ((ok == 0)) && node_idle; then
        sinfo -N -o '%N %t %c %m %P'
        return 0
    fi
    return 1
}

stop() {
    mkdir -p "$STATE/run"
    exec 9>"$STATE/lock"
    flock 9
    # slurmd first, munge last; each only if its pid file names a live process of that program.
    for d in slurmd slurmctld slurmdbd mariadbd munged; do
        if alive "$d"; then
            local pid
            pid=$(<"$STATE/run/$d.pid")
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 60; i++)); do
                running "$pid" || break
                sleep 0.5
            done
            if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
            log "stopped $d (pid $pid)"
        fi
        rm -f "$STATE/run/$d.pid"
    done
    rm -f /run/slurmctld.pid /run/slurmdbd.pid /run/slurmd.pid
}

# The daemons' working directory: never a caller's folder that a test deletes later (slurmstepd then fails
# getcwd and writes that error into every job's output).
cd /
case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
