#!/usr/bin/env bash
# A real single-node Kubernetes cluster from parts, for `make e2e-node`:
#
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler (the pinned
#   builds of e2e/bin/install.sh), kubelet and kube-proxy (its node stage),
#   containerd + runc + the CNI bridge/host-local plugins (Debian packages),
#   and a pause image built here from e2e/node/pause — nothing is pulled from
#   any image registry.
#
# Everything runs in a network namespace of its own (dsw-node), so the node's
# iptables rules, bridge and routes never touch the machine's: the host reaches
# it only through a veth pair with private addresses. Processes share the
# host's mount namespace (as on a real node: the kubelet's volume mounts must
# be visible to containerd). Dual-stack: Pods 10.244.0.0/24 + fd00:10:244::/64,
# Services 10.96.0.0/16 + fd00:10:96::/108 (the e2e tier's shape).
#
# There is no cluster DNS (no CoreDNS image). Nothing here needs it: the
# apiserver resolves a webhook's service: reference through the Service's
# ClusterIP (kube-proxy's rules), not through DNS, and only checks the DNS name
# against the serving certificate.
#
# Usage (as root):
#   e2e/node/node.sh up       start the node; prints the kubeconfig path
#   e2e/node/node.sh down     stop everything it started and remove its state
#   e2e/node/node.sh import ARCHIVE   import an OCI archive into the node's containerd
#   e2e/node/node.sh logs DIR copy the node's logs into DIR
#
# Environment: NODE_ROOT (state, default /tmp/dsw-node), K8S_BIN_DIR (default:
# e2e/bin/install.sh --print-dir), NODE_BIN_DIR (default: install.sh --print-node-dir).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
R=${NODE_ROOT:-/tmp/dsw-node}
NS=dsw-node
NODE_NAME=dsw-node
HOST_IF=dswnode-h
NODE_IF=dswnode-n
HOST_V4=172.30.255.1
NODE_V4=172.30.255.2
HOST_V6=fd7d:5c1e:dd5::1
NODE_V6=fd7d:5c1e:dd5::2
SERVICE_CIDRS=10.96.0.0/16,fd00:10:96::/108
POD_CIDRS=10.244.0.0/16,fd00:10:244::/56
POD_V4=10.244.0.0/24
POD_V6=fd00:10:244::/64
PAUSE_IMAGE=localhost/dualstack-webhook/pause:e2e
SOCK=$R/containerd/containerd.sock

log() { echo "node.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

bins() {
	K8S_BIN_DIR=${K8S_BIN_DIR:-$("$root/e2e/bin/install.sh" --print-dir)}
	NODE_BIN_DIR=${NODE_BIN_DIR:-$("$root/e2e/bin/install.sh" --print-node-dir)}
	local b
	for b in etcd kube-apiserver kube-controller-manager kubectl; do
		[[ -x "$K8S_BIN_DIR/$b" ]] || die "$K8S_BIN_DIR/$b missing: run e2e/bin/install.sh"
	done
	for b in kubelet kube-proxy kube-scheduler; do
		[[ -x "$NODE_BIN_DIR/$b" ]] || die "$NODE_BIN_DIR/$b missing: run e2e/bin/install.sh --node"
	done
	for b in containerd containerd-shim-runc-v2 runc ctr iptables ip6tables openssl nsenter ip; do
		command -v "$b" >/dev/null || die "$b not found: run e2e/bin/install.sh --node (installs the Debian packages)"
	done
	[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
		die "CNI plugins missing in /usr/lib/cni: apt-get install containernetworking-plugins"
}

# in_node CMD...: run in the node's network namespace (host mount namespace).
in_node() { nsenter --net="/run/netns/$NS" -- "$@"; }

# start NAME CMD...: a daemon in the node, its own session, log and pid file.
start() {
	local name=$1
	shift
	setsid nsenter --net="/run/netns/$NS" -- "$@" >>"$R/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$R/pids/$name"
	log "started $name (pid $!)"
}

wait_for() { # wait_for WHAT SECONDS CMD...
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	die "$what not ready after ${secs}s (logs in $R/logs)"
}

pki() {
	local d=$R/pki
	mkdir -p "$d"
	cd "$d"
	key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
	key ca
	openssl req -x509 -new -key ca.key -out ca.crt -days 7 -subj /CN=dsw-node-ca 2>/dev/null
	cert() { # cert NAME SUBJECT EXTENSIONS
		key "$1"
		openssl req -new -key "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
		printf '%b\n' "$3" >"$1.ext"
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 -out "$1.crt" -extfile "$1.ext" 2>/dev/null
	}
	cert apiserver /CN=kube-apiserver "subjectAltName=IP:$NODE_V4,IP:$NODE_V6,IP:10.96.0.1,IP:fd00:10:96::1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost\nextendedKeyUsage=serverAuth"
	cert admin "/O=system:masters/CN=dsw-node-admin" "extendedKeyUsage=clientAuth"
	cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
	cert kubelet-serving "/CN=$NODE_NAME" "subjectAltName=IP:$NODE_V4,IP:$NODE_V6,DNS:$NODE_NAME\nextendedKeyUsage=serverAuth"
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
	openssl pkey -in sa.key -pubout -out sa.pub
	cd - >/dev/null
	kubeconfig admin "$R/admin.kubeconfig"
	kubeconfig kubelet "$R/kubelet.kubeconfig"
}

kubeconfig() { # kubeconfig CERT FILE
	cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dsw-node
  cluster:
    server: https://$NODE_V4:6443
    certificate-authority: $R/pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $R/pki/$1.crt
    client-key: $R/pki/$1.key
contexts:
- name: dsw-node
  context: {cluster: dsw-node, user: $1}
current-context: dsw-node
EOF
}

network() {
	ip netns add "$NS"
	in_node ip link set lo up
	ip link add "$HOST_IF" type veth peer name "$NODE_IF" netns "$NS"
	ip addr add "$HOST_V4/30" dev "$HOST_IF"
	ip -6 addr add "$HOST_V6/64" dev "$HOST_IF" nodad
	ip link set "$HOST_IF" up
	in_node ip addr add "$NODE_V4/30" dev "$NODE_IF"
	in_node ip -6 addr add "$NODE_V6/64" dev "$NODE_IF" nodad
	in_node ip link set "$NODE_IF" up
	# A default route in the node so that the kubelet and kube-proxy find their
	# node IPs; it points at the host end of the veth only.
	in_node ip route add default via "$HOST_V4"
	in_node ip -6 route add default via "$HOST_V6"
	in_node sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 2>/dev/null ||
		log "bridge-nf-call sysctls not settable in the node namespace (Pod-to-Service hairpin may not work)"
	mkdir -p "$R/cni/net.d"
	cat >"$R/cni/net.d/10-dsw-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "dsw-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$R/cni/ipam",
        "ranges": [[{"subnet": "$POD_V4"}], [{"subnet": "$POD_V6"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
      }
    }
  ]
}
EOF
}

containerd_up() {
	mkdir -p "$R/containerd"
	cat >"$R/containerd/config.toml" <<EOF
version = 2
root = "$R/containerd/root"
state = "$R/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$R/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  # This machine withholds CAP_SYS_RESOURCE, so no process may lower its
  # oom_score_adj: without this, runc fails on the kubelet's -998 for the
  # sandbox ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$R/cni/net.d"
EOF
	start containerd containerd --config "$R/containerd/config.toml"
	wait_for containerd 30 ctr --address "$SOCK" version
}

ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }

import() { # import ARCHIVE: the host's platform of an OCI archive
	ctr_ images import --platform "linux/$(go env GOARCH)" "$1"
}

pause_image() {
	local b=$R/images/pause
	mkdir -p "$R/images"
	(cd "$root/e2e" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$b" ./node/pause)
	(cd "$root/hack/image" && go run . -out "$R/images/pause.oci.tar" -name "$PAUSE_IMAGE" -epoch 0 \
		-path /pause -user 65535:65535 -passwd=false -binary "linux/$(go env GOARCH)=$b") >/dev/null
	import "$R/images/pause.oci.tar" >&2
}

control_plane() {
	local p=$R/pki
	mkdir -p "$R/etcd"
	start etcd "$K8S_BIN_DIR/etcd" --data-dir "$R/etcd" --name dsw-node \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster dsw-node=http://127.0.0.1:2380 --unsafe-no-fsync
	start kube-apiserver "$K8S_BIN_DIR/kube-apiserver" \
		--etcd-servers http://127.0.0.1:2379 \
		--bind-address :: --secure-port 6443 --advertise-address "$NODE_V4" \
		--service-cluster-ip-range "$SERVICE_CIDRS" \
		--client-ca-file "$p/ca.crt" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
		--kubelet-client-certificate "$p/admin.crt" --kubelet-client-key "$p/admin.key" \
		--service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--authorization-mode Node,RBAC --allow-privileged=false \
		--kubelet-preferred-address-types InternalIP --v 1
	wait_for kube-apiserver 90 "$K8S_BIN_DIR/kubectl" --kubeconfig "$R/admin.kubeconfig" get --raw /readyz
	start kube-controller-manager "$K8S_BIN_DIR/kube-controller-manager" \
		--kubeconfig "$R/admin.kubeconfig" --authentication-kubeconfig "$R/admin.kubeconfig" \
		--authorization-kubeconfig "$R/admin.kubeconfig" --leader-elect=false \
		--bind-address 127.0.0.1 \
		--root-ca-file "$p/ca.crt" --service-account-private-key-file "$p/sa.key" --use-service-account-credentials \
		--allocate-node-cidrs --cluster-cidr "$POD_CIDRS" --node-cidr-mask-size-ipv4 24 --node-cidr-mask-size-ipv6 64 \
		--service-cluster-ip-range "$SERVICE_CIDRS" --v 1
	start kube-scheduler "$NODE_BIN_DIR/kube-scheduler" \
		--kubeconfig "$R/admin.kubeconfig" --authentication-kubeconfig "$R/admin.kubeconfig" \
		--authorization-kubeconfig "$R/admin.kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --v 1
}

node_agents() {
	mkdir -p "$R/kubelet" "$R/pod-logs"
	cat >"$R/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine runs cgroup v1 (hybrid); the kubelet refuses it unless told.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
podLogsDir: $R/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $R/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $R/pki/kubelet-serving.crt
tlsPrivateKeyFile: $R/pki/kubelet-serving.key
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
# No cluster DNS and no host nameservers inside Pods.
resolvConf: ""
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
	start kubelet "$NODE_BIN_DIR/kubelet" --config "$R/kubelet/config.yaml" \
		--kubeconfig "$R/kubelet.kubeconfig" --root-dir "$R/kubelet" --cert-dir "$R/kubelet/pki" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_V4,$NODE_V6" --v 1
	cat >"$R/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $R/admin.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDRS
hostnameOverride: $NODE_NAME
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# A network namespace cannot change the conntrack table size: leave it.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
	start kube-proxy "$NODE_BIN_DIR/kube-proxy" --config "$R/kube-proxy.yaml" --v 1
}

kubectl_() { "$K8S_BIN_DIR/kubectl" --kubeconfig "$R/admin.kubeconfig" "$@"; }

node_ready() {
	[[ $(kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

up() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (network namespace, mounts, cgroups)"
	bins
	if [[ -e "/run/netns/$NS" || -d "$R/pids" ]]; then
		log "a node is already up (or was not cleaned up): bringing it down first"
		down
	fi
	mkdir -p "$R/logs" "$R/pids"
	# The kubelet sets these kernel tunables for itself; restored by down.
	sysctl -n kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom >"$R/sysctl.saved"
	local t=$SECONDS
	pki
	network
	containerd_up
	pause_image
	control_plane
	node_agents
	wait_for "node $NODE_NAME Ready" 120 node_ready
	log "node up in $((SECONDS - t))s; kubeconfig $R/admin.kubeconfig"
	echo "$R/admin.kubeconfig"
}

stop_pid() { # stop_pid NAME: SIGTERM, then SIGKILL after 10s
	local f=$R/pids/$1 pid i
	[[ -f "$f" ]] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

down() {
	local n id
	for n in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
		stop_pid "$n"
	done
	# Containers: kill their tasks so that the shims exit, then containerd.
	if [[ -S "$SOCK" ]]; then
		for id in $(ctr_ tasks ls -q 2>/dev/null); do
			ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		sleep 1
		for id in $(ctr_ tasks ls -q 2>/dev/null); do
			ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
		done
	fi
	stop_pid containerd
	# Mounts under the node's root (kubelet volumes, container rootfs, netns
	# files), deepest first.
	if [[ -d "$R" ]]; then
		awk -v r="$R/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
			umount -l "$m" 2>/dev/null || true
		done
	fi
	if [[ -e "/run/netns/$NS" ]]; then
		ip netns del "$NS" || true
	fi
	ip link del "$HOST_IF" 2>/dev/null || true
	# Pod cgroups the kubelet created (cgroup v1: one tree per controller).
	local c
	for c in /sys/fs/cgroup/*/kubepods; do
		if [[ -d "$c" ]]; then
			find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
		fi
	done
	if [[ -f "$R/sysctl.saved" ]]; then
		local v
		mapfile -t v <"$R/sysctl.saved"
		sysctl -qw "kernel.panic=${v[0]}" "kernel.panic_on_oops=${v[1]}" "vm.overcommit_memory=${v[2]}" "vm.panic_on_oom=${v[3]}" || true
	fi
	rm -rf "$R"
	log "down"
}

logs() { # logs DIR
	local d=$1
	mkdir -p "$d"
	cp -r "$R/logs/." "$d/" 2>/dev/null || true
	if [[ -d "$R/pod-logs" ]]; then
		cp -rL "$R/pod-logs" "$d/pod-logs" 2>/dev/null || true
	fi
	if [[ -S "$SOCK" ]]; then
		ctr_ images ls >"$d/containerd-images.txt" 2>&1 || true
		ctr_ containers ls >"$d/containerd-containers.txt" 2>&1 || true
	fi
	if [[ -e "/run/netns/$NS" ]]; then
		{
			in_node ip -d addr
			in_node ip route
			in_node ip -6 route
			in_node iptables-save
			in_node ip6tables-save
		} >"$d/node-network.txt" 2>&1 || true
	fi
}

case "${1:-}" in
up) up ;;
down) down ;;
import)
	[[ -n "${2:-}" ]] || die "usage: node.sh import ARCHIVE"
	import "$2"
	;;
logs)
	[[ -n "${2:-}" ]] || die "usage: node.sh logs DIR"
	logs "$2"
	;;
env)
	bins
	echo "KUBECONFIG=$R/admin.kubeconfig K8S_BIN_DIR=$K8S_BIN_DIR NODE_BIN_DIR=$NODE_BIN_DIR"
	;;
*)
	sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
