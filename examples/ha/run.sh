#!/usr/bin/env bash
# Three "masters" on one machine: three upkeep instances, each running one member
# of a 3-member etcd cluster from a kubeadm-style static Pod manifest. This is the
# "clustered etcd" step of a classic HA master, done with upkeep instead of
# kubelet + monit. Needs Debian's etcd-server and etcd-client; no root.
#
#   bash examples/ha/run.sh            # start the three masters in the background
#   bash examples/ha/run.sh stop       # SIGTERM them (etcd keeps running: on_exit = "keep")
#   bash examples/ha/run.sh clean      # stop everything, remove the work dir
#
# Ports: master N (1..3) uses client 2N379, peer 2N380, metrics 2N381, upkeep 99N0.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${UPKEEP_HA_DIR:-$repo/target/ha}
upkeep=${UPKEEP:-$repo/target/debug/upkeep}

cluster="master-1=http://127.0.0.1:21380,master-2=http://127.0.0.1:22380,master-3=http://127.0.0.1:23380"

# SIGTERM upkeep of master N (by the pid this script recorded) and wait up
# to 30 s for it to exit.
stop_upkeep() {
    local m=$1 pid
    [ -f "$m/upkeep.pid" ] || return 0
    pid=$(cat "$m/upkeep.pid")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "upkeep pid $pid (master $m) did not exit within 30 s" >&2
    return 1
}

# The etcd pids of master N: those upkeep recorded in its state file, each
# checked against this master's own data directory, so a pid reused by
# another process (or another copy of this example) is never signalled.
etcd_pids() {
    local m=$1 p
    for p in $(sed -n 's/.*"pid": *\([0-9][0-9]*\),.*/\1/p' "$m/state/state.json" 2>/dev/null); do
        if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "--data-dir=$m/etcd-data"; then
            echo "$p"
        fi
    done
}

case "${1:-start}" in
stop)
    for n in 1 2 3; do stop_upkeep "$work/master-$n"; done
    exit 0 ;;
clean)
    # upkeep first (on_exit = "keep": its etcd keeps running), then that etcd,
    # by pid: nothing is killed by name.
    for n in 1 2 3; do
        m=$work/master-$n
        stop_upkeep "$m"
        for p in $(etcd_pids "$m"); do
            # Its cgroup (upkeep creates one per service when run as root).
            cg=$(sed -n 's|^0::/||p' "/proc/$p/cgroup" 2>/dev/null || true)
            kill -TERM "$p" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$p" 2>/dev/null || true
            case $cg in
            upkeep-*/*)
                for mnt in /sys/fs/cgroup /sys/fs/cgroup/unified; do
                    [ -f "$mnt/cgroup.procs" ] || continue
                    for _ in $(seq 50); do rmdir "$mnt/$cg" 2>/dev/null && break; sleep 0.1; done
                    rmdir "$mnt/${cg%%/*}" 2>/dev/null || true
                done ;;
            esac
        done
    done
    rm -rf "$work"
    exit 0 ;;
esac

[ -x "$upkeep" ] || (cd "$repo" && cargo build -p upkeep)
for n in 1 2 3; do
    m="$work/master-$n"
    mkdir -p "$m/manifests" "$m/state" "$m/log"
    chmod 755 "$m/manifests"
    cat > "$m/upkeep.toml" <<TOML
manifests = "$m/manifests"
listen = "127.0.0.1:99${n}0"
state_dir = "$m/state"
log_dir = "$m/log"
node_name = "master-$n"
on_exit = "keep"

# Planned changes roll one master at a time through this etcd (issue #16).
[cluster]
etcd = ["http://127.0.0.1:21379", "http://127.0.0.1:22379", "http://127.0.0.1:23379"]
ready_timeout = "1m"
soak = "5s"
TOML
    cat > "$m/manifests/etcd.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
  labels: {component: etcd, tier: control-plane}
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
  - name: etcd
    image: registry.k8s.io/etcd:3.5.10-0
    command:
    - etcd
    - --advertise-client-urls=http://127.0.0.1:2${n}379
    - --data-dir=$m/etcd-data
    - --initial-advertise-peer-urls=http://127.0.0.1:2${n}380
    - --initial-cluster=$cluster
    - --initial-cluster-state=new
    - --initial-cluster-token=upkeep-ha-example
    - --listen-client-urls=http://127.0.0.1:2${n}379
    - --listen-metrics-urls=http://127.0.0.1:2${n}381
    - --listen-peer-urls=http://127.0.0.1:2${n}380
    - --name=master-$n
    livenessProbe:
      httpGet: {host: 127.0.0.1, path: "/health?exclude=NOSPACE&serializable=true", port: 2${n}381}
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
      failureThreshold: 8
    readinessProbe:
      httpGet: {host: 127.0.0.1, path: "/health?serializable=true", port: 2${n}381}
      periodSeconds: 1
    volumeMounts:
    - {mountPath: $m/etcd-data, name: etcd-data}
  volumes:
  - name: etcd-data
    hostPath: {path: $m/etcd-data, type: DirectoryOrCreate}
YAML
    chmod 644 "$m/manifests/etcd.yaml"
    nohup "$upkeep" run --config "$m/upkeep.toml" >"$m/upkeep.log" 2>&1 &
    echo $! > "$m/upkeep.pid"
    echo "master-$n: upkeep pid $(cat "$m/upkeep.pid"), http://127.0.0.1:99${n}0/health, etcd client 127.0.0.1:2${n}379"
done
cat <<EOF2

Try:
  ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:21379 put k v
  ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:23379 get k
  curl -s 127.0.0.1:9920/health
  kill -9 \$(curl -s 127.0.0.1:9920/health/etcd | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')   # etcd comes back
  kill -9 \$(cat $work/master-2/upkeep.pid); $upkeep run --config $work/master-2/upkeep.toml &   # etcd keeps its pid
  # a change on all three at once rolls one member at a time:
  for n in 1 2 3; do sed -i 's/--name=master-/--heartbeat-interval=150\n    - --name=master-/' $work/master-\$n/manifests/etcd.yaml; done
  $upkeep rollout status --config $work/master-1/upkeep.toml
EOF2
