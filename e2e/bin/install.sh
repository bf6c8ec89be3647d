#!/usr/bin/env bash
# Builds the binaries of the end-to-end tier from the Go module proxy — and from
# nowhere else — and makes them available as .k8s-bin/<versions-key>/ and
# .k8s-bin/current in this checkout:
#
#   etcd v3.7.3, kube-apiserver / kube-controller-manager / kubectl v1.37.2,
#   helm v3.22.0
#
# and, in a separately keyed extra stage (see install_extra below), tools that
# only some tests need, linked into .k8s-bin/extra/ (--print-extra-dir):
#
#   kustomize v5.8.2, helm4 (helm v4.3.1)
#
# Each comes from a committed wrapper module under e2e/bin/{etcd,k8s,helm}, so
# the build is checksum-pinned by that module's go.sum (-mod=readonly refuses
# anything not in it). The versions key includes a hash of the wrapper modules,
# so changing a wrapper rebuilds; a stamp file makes a warm run a no-op.
#
# The binaries themselves live in a per-user cache outside the checkout
# ($K8S_BIN_CACHE, default ~/.cache/dualstack-webhook/k8s-bin/<key>) and
# .k8s-bin/<key> is a symlink to it: CI runs in a fresh clone on a machine it
# often reuses, and this keeps those runs warm.
#
# Usage:
#   e2e/bin/install.sh              build what is missing, print the folder
#   e2e/bin/install.sh --print-dir  print the folder (KUBEBUILDER_ASSETS) only
#   e2e/bin/install.sh --check      exit 0 if installed (extras too), 1 if not; builds nothing
#   e2e/bin/install.sh --print-extra-dir  print the folder of the extra tools only
#   e2e/bin/install.sh --force      rebuild even when stamped
#   e2e/bin/install.sh --node       the node stage (make e2e-node): kubelet,
#                                   kube-proxy, kube-scheduler of the same
#                                   release from e2e/bin/k8s-node, keyed and
#                                   stamped on their own, and the Debian
#                                   packages containerd, runc,
#                                   containernetworking-plugins, iptables
#                                   (apt-get, as root) where missing
#   e2e/bin/install.sh --print-node-dir / --check-node   as above, node stage
#
# Cold: ~7 min on 2 cores (kube-apiserver alone peaks at ~2.3 GB RAM), plus
# the extra stage: kustomize + helm4 cost ~4.5 min of CPU cold (measured:
# 177 s + 462 s wall with an empty Go build cache under a load average of ~25).
set -euo pipefail

ETCD_VERSION=v3.7.3
K8S_VERSION=v1.37.2
HELM_VERSION=v3.22.0
HELM4_VERSION=v4.3.1 # the version lives in e2e/bin/helm4/go.mod; this only stamps `helm version`

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
base=${K8S_BIN_ROOT:-$root/.k8s-bin}
cache_root=${K8S_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dualstack-webhook/k8s-bin}

# The key names the versions a human can read plus a short hash of the wrapper
# modules (go.mod + go.sum), which are what really pins the build.
wrapper_hash=$(cat "$here"/etcd/go.mod "$here"/etcd/go.sum "$here"/k8s/go.mod "$here"/k8s/go.sum \
	"$here"/helm/go.mod "$here"/helm/go.sum | sha256sum | cut -c1-10)
key="etcd-${ETCD_VERSION}_k8s-${K8S_VERSION}_helm-${HELM_VERSION}_${wrapper_hash}"
dir="$base/$key"         # what callers use (KUBEBUILDER_ASSETS)
store="$cache_root/$key" # where the files are
stamp="$store/.stamp"
binaries=(etcd kube-apiserver kube-controller-manager kubectl helm)
extra_dir="$base/extra" # per checkout: one symlink per extra tool, into the cache

# The extra stage. Each tool is keyed on its own (name + hash of its wrapper
# module, package and ldflags) and cached beside the control-plane key, so
# adding, bumping or dropping one never invalidates the control-plane build or
# another extra. A stage for more tools is one more line in extras().
#
#   install_extra NAME WRAPPER_DIR PKG [LDFLAGS]
#
# WRAPPER_DIR is a committed module under e2e/bin/ whose go.mod has a `tool`
# directive for PKG. In --check mode (extra_mode=check) it only tests.
extra_mode=install
extra_missing=0
install_extra() {
	local name=$1 mod=$2 pkg=$3 ldflags=${4:--s -w} t=$SECONDS
	local h
	h=$(cat "$here/$mod/go.mod" "$here/$mod/go.sum" <(echo "$pkg $ldflags") | sha256sum | cut -c1-10)
	local xstore="$cache_root/extra/${name}_$h"
	if [[ $extra_mode == check ]]; then
		[[ -f "$xstore/.stamp" && -x "$xstore/$name" && "$(readlink "$extra_dir/$name" 2>/dev/null)" == "$xstore/$name" ]] ||
			extra_missing=1
		return 0
	fi
	if [[ $force -eq 1 || ! -f "$xstore/.stamp" || ! -x "$xstore/$name" ]]; then
		echo "==> $name: building $pkg (extra stage, key ${name}_$h) ..." >&2
		mkdir -p "$xstore"
		rm -f "$xstore/.stamp"
		(cd "$here/$mod" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath" \
			go build -ldflags "$ldflags" -o "$xstore/$name.tmp" "$pkg")
		mv -f "$xstore/$name.tmp" "$xstore/$name"
		{
			echo "$pkg from e2e/bin/$mod ($h)"
			echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) with $(go version) in $((SECONDS - t))s"
		} >"$xstore/.stamp"
		echo "==> $name: done in $((SECONDS - t))s ($(du -h "$xstore/$name" | cut -f1))" >&2
	fi
	mkdir -p "$extra_dir"
	ln -sfn "$xstore/$name" "$extra_dir/$name.tmp"
	mv -T "$extra_dir/$name.tmp" "$extra_dir/$name"
}

extras() {
	install_extra kustomize kustomize sigs.k8s.io/kustomize/kustomize/v5
	# helm4 beside helm (v3): convert's post-renderer is tested with both
	# majors (the Helm 4 one is a plugin). Its .Capabilities default follows the client-go it is
	# built with, so unlike v3 it needs no -X for the Kubernetes version.
	install_extra helm4 helm4 helm.sh/helm/v4/cmd/helm \
		"-s -w -X helm.sh/helm/v4/internal/version.version=$HELM4_VERSION"
}

installed() {
	[[ -f "$stamp" ]] || return 1
	local b
	for b in "${binaries[@]}"; do
		[[ -x "$store/$b" ]] || return 1
	done
}

link_current() {
	mkdir -p "$base"
	if [[ ! -L "$dir" ]]; then
		rm -rf "$dir"
	fi
	ln -sfn "$store" "$dir.tmp"
	mv -T "$dir.tmp" "$dir"
	# Relative link, so current follows the key.
	ln -sfn "$key" "$base/current.tmp"
	mv -T "$base/current.tmp" "$base/current"
}

# --- node stage: its own key, stamp and binaries, so that adding it changed
# nothing above (the control-plane key stays as it was).
node_hash=$(cat "$here"/k8s-node/go.mod "$here"/k8s-node/go.sum | sha256sum | cut -c1-10)
node_key="node-k8s-${K8S_VERSION}_${node_hash}"
node_dir="$base/$node_key"
node_store="$cache_root/$node_key"
node_binaries=(kubelet kube-proxy kube-scheduler)
node_debs=(containerd runc containernetworking-plugins iptables)

node_installed() {
	[[ -f "$node_store/.stamp" ]] || return 1
	local b
	for b in "${node_binaries[@]}"; do
		[[ -x "$node_store/$b" ]] || return 1
	done
	for b in "${node_debs[@]}"; do
		dpkg-query -W -f '${Status}' "$b" 2>/dev/null | grep -q 'install ok installed' || return 1
	done
}

node_stage() { # after the lock is held
	local missing=() d b t
	for d in "${node_debs[@]}"; do
		dpkg-query -W -f '${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || missing+=("$d")
	done
	if ((${#missing[@]})); then
		if [[ $(id -u) -ne 0 ]]; then
			echo "install.sh: Debian packages missing: ${missing[*]} (run as root, or apt-get install them)" >&2
			exit 1
		fi
		t=$SECONDS
		echo "==> apt-get install ${missing[*]}" >&2
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
		echo "==> Debian packages installed in $((SECONDS - t))s" >&2
	fi
	mkdir -p "$node_store"
	rm -f "$node_store/.stamp"
	export CGO_ENABLED=0
	export GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
	local ld="-s -w" p minor
	minor=$(echo "$K8S_VERSION" | cut -d. -f2)
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	for b in "${node_binaries[@]}"; do
		if [[ $force -eq 0 && -x "$node_store/$b" ]]; then
			continue
		fi
		t=$SECONDS
		echo "==> $b: building k8s.io/kubernetes/cmd/$b ..." >&2
		(cd "$here/k8s-node" && go build -ldflags "$ld" -o "$node_store/$b.tmp" "k8s.io/kubernetes/cmd/$b")
		mv -f "$node_store/$b.tmp" "$node_store/$b"
		echo "==> $b: done in $((SECONDS - t))s" >&2
	done
	echo "kubernetes $K8S_VERSION node binaries, wrapper $node_hash, built $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$node_store/.stamp"
	link_node
}

# link_node makes this checkout's .k8s-bin/<node key> point at the cache:
# also when the cache was filled by another clone (CI's fresh clone).
link_node() {
	mkdir -p "$base"
	if [[ ! -L "$node_dir" ]]; then
		rm -rf "$node_dir"
	fi
	ln -sfn "$node_store" "$node_dir.tmp"
	mv -T "$node_dir.tmp" "$node_dir"
	echo "$node_dir"
}

force=0
stage=control-plane
case "${1:-}" in
--node) stage=node ;;
--print-node-dir)
	echo "$node_dir"
	exit 0
	;;
--check-node)
	node_installed
	exit $?
	;;
--print-dir)
	echo "$dir"
	exit 0
	;;
--print-extra-dir)
	echo "$extra_dir"
	exit 0
	;;
--check)
	installed || exit 1
	extra_mode=check
	extras
	exit $extra_missing
	;;
--force) force=1 ;;
"") ;;
-h | --help)
	sed -n '2,/^set -e/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "install.sh: unknown argument: $1 (try --help)" >&2
	exit 2
	;;
esac

mkdir -p "$base" "$cache_root"
if [[ $stage == node ]]; then
	# Its own lock: the node stage never waits for a control-plane build.
	exec 8>"$cache_root/.lock-node"
	if ! flock -n 8; then
		echo "install.sh: another node-stage install is running; waiting for it..." >&2
		flock 8
	fi
	if [[ $force -eq 0 ]] && node_installed; then
		echo "install.sh: node binaries and packages already installed" >&2
		link_node
		exit 0
	fi
	node_stage
	exit 0
fi
# Serialise concurrent installs (two engineers, two clones, make -j): the
# second waits for the first and then finds the stamp.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
	echo "install.sh: another install is running; waiting for it..." >&2
	flock 9
fi

# Earlier versions of this script built straight into .k8s-bin/<key>: adopt
# such a folder instead of rebuilding it.
if [[ -d "$dir" && ! -L "$dir" && -f "$dir/.stamp" && ! -e "$store" ]]; then
	echo "install.sh: moving $dir to the cache $store" >&2
	mv "$dir" "$store"
fi

if [[ $force -eq 0 ]] && installed; then
	link_current
	echo "install.sh: binaries already installed (stamp $stamp)" >&2
	extras
	echo "$dir"
	exit 0
fi

mkdir -p "$store"
rm -f "$stamp"

# Static binaries; -mod=readonly so nothing outside the committed go.sum can
# slip in; -trimpath for reproducible output independent of this checkout.
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false -trimpath"

t_all=$SECONDS
step() { # step NAME MODULE_DIR PACKAGE LDFLAGS
	local name=$1 mod=$2 pkg=$3 ldflags=$4 t=$SECONDS
	if [[ $force -eq 0 && -x "$store/$name" ]]; then
		echo "==> $name: present, skipped" >&2
		return
	fi
	echo "==> $name: building $pkg ..." >&2
	(cd "$here/$mod" && go build -ldflags "$ldflags" -o "$store/$name.tmp" "$pkg")
	mv -f "$store/$name.tmp" "$store/$name"
	echo "==> $name: done in $((SECONDS - t))s ($(du -h "$store/$name" | cut -f1))" >&2
}

k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
k8s_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor -X $p.gitTreeState=clean"
done

echo "install.sh: building into $store (cold: ~7 min on 2 cores)" >&2
step etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
step kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
step kubectl k8s k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
step kube-controller-manager k8s k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
# helm v3 assumes Kubernetes 1.20 for .Capabilities unless told otherwise.
step helm helm helm.sh/helm/v3/cmd/helm "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor"

{
	echo "etcd $ETCD_VERSION"
	echo "kubernetes $K8S_VERSION"
	echo "helm $HELM_VERSION"
	echo "wrappers $wrapper_hash"
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) with $(go version)"
} >"$stamp"
link_current
extras
echo "install.sh: all binaries ready in $((SECONDS - t_all))s" >&2
echo "$dir"
