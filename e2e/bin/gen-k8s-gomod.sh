#!/usr/bin/env bash
# Regenerates k8s/go.mod for another Kubernetes version: k8s.io/kubernetes
# requires its staging modules at v0.0.0 with replaces into ./staging, which a
# module outside that tree cannot use; map each to its published v0.<minor>.<patch>.
# Usage: e2e/bin/gen-k8s-gomod.sh v1.37.2   (then update K8S_VERSION in install.sh)
set -euo pipefail
version=${1:?usage: $0 vX.Y.Z}
staging=v0.${version#v1.}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
modfile=$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
[[ -f "$modfile" ]] || { echo "cannot download k8s.io/kubernetes@$version" >&2; exit 1; }
{
	echo '// Wrapper module: builds kube-apiserver, kube-controller-manager and kubectl'
	echo "// $version from the Go module proxy, checksum-pinned by the go.sum beside it."
	echo '// The replace list maps the staging modules that k8s.io/kubernetes requires at'
	echo "// v0.0.0 to their published $staging; regenerate with ../gen-k8s-gomod.sh."
	echo 'module github.com/dualstack-webhook/dualstack-webhook/e2e/bin/k8s'
	echo
	grep -m1 '^go ' "$modfile"
	echo
	grep '^godebug' "$modfile" || true
	echo
	echo "require k8s.io/kubernetes $version"
	echo
	echo 'tool ('
	echo '	k8s.io/kubernetes/cmd/kube-apiserver'
	echo '	k8s.io/kubernetes/cmd/kube-controller-manager'
	echo '	k8s.io/kubernetes/cmd/kubectl'
	echo ')'
	echo
	echo 'replace ('
	# sample-cli-plugin and sample-controller are replaced upstream but neither
	# required nor served, so only the v0.0.0 requirements are mapped.
	grep -E '^\s*k8s.io/[a-z0-9-]+ v0.0.0$' "$modfile" | awk -v v="$staging" '{print "\t"$1" => "$1" "v}'
	echo ')'
} >"$here/k8s/go.mod"
rm -f "$here/k8s/go.sum"
(cd "$here/k8s" && go mod tidy)
echo "regenerated $here/k8s/go.mod for $version"
# The node stage's wrapper (kubelet, kube-proxy, kube-scheduler): the same
# requirements and replaces, its own tools and go.sum.
{
	echo '// Wrapper module: builds the node binaries (kubelet, kube-proxy,'
	echo '// kube-scheduler) of the same Kubernetes release as ../k8s, checksum-pinned by'
	echo '// the go.sum beside it. Same require/replace list as ../k8s/go.mod (kept in'
	echo '// step by ../gen-k8s-gomod.sh); a module of its own so that ../k8s and its'
	echo '// cache key stay untouched.'
	sed -e '1,4d' -e 's#^module .*#module github.com/dualstack-webhook/dualstack-webhook/e2e/bin/k8s-node#' \
		-e 's#k8s.io/kubernetes/cmd/kube-apiserver#k8s.io/kubernetes/cmd/kubelet#' \
		-e 's#k8s.io/kubernetes/cmd/kube-controller-manager#k8s.io/kubernetes/cmd/kube-proxy#' \
		-e 's#k8s.io/kubernetes/cmd/kubectl#k8s.io/kubernetes/cmd/kube-scheduler#' "$here/k8s/go.mod"
} >"$here/k8s-node/go.mod"
cp "$here/k8s/go.sum" "$here/k8s-node/go.sum"
(cd "$here/k8s-node" && go mod tidy)
echo "regenerated $here/k8s-node/go.mod for $version"
