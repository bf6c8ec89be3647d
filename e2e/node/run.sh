#!/usr/bin/env bash
# make e2e-node: bring the node up (node.sh), import the project's image and
# run the e2enode-tagged tests of e2e/node against it; on failure keep the
# node's logs under e2e/_artifacts/node-logs-<time>/; always bring it down.
# One node per machine at a time (its network namespace has a fixed name):
# a second run waits for the first.
#
#   e2e/node/run.sh IMAGE_ARCHIVE IMAGE [go test flags...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
archive=${1:?usage: run.sh IMAGE_ARCHIVE IMAGE [go test flags]}
image=${2:?usage: run.sh IMAGE_ARCHIVE IMAGE [go test flags]}
shift 2
[[ -f "$archive" ]] || {
	echo "run.sh: $archive missing: make image" >&2
	exit 1
}

exec 9>/tmp/dsw-node.lock
if ! flock -n 9; then
	echo "run.sh: another e2e-node run holds /tmp/dsw-node.lock; waiting..." >&2
	flock 9
fi

artifacts="$root/e2e/_artifacts/node-logs-$(date +%Y%m%d-%H%M%S)"
status=0
# shellcheck disable=SC2317 # runs from the EXIT trap
finish() {
	local rc=$?
	if [[ $status -ne 0 || $rc -ne 0 ]]; then
		"$here/node.sh" logs "$artifacts" || true
		echo "run.sh: node logs in $artifacts" >&2
	fi
	"$here/node.sh" down || true
}
trap finish EXIT

t=$SECONDS
kubeconfig=$("$here/node.sh" up) || {
	status=$?
	exit $status
}
echo "==> node up in $((SECONDS - t))s" >&2
t=$SECONDS
"$here/node.sh" import "$archive" >&2 || {
	status=$?
	exit $status
}
echo "==> image $image imported in $((SECONDS - t))s" >&2
cd "$root/e2e"
E2E_NODE_KUBECONFIG=$kubeconfig E2E_NODE_IMAGE=$image E2E_REQUIRED=1 \
	E2E_NODE_CONTAINERD=${NODE_ROOT:-/tmp/dsw-node}/containerd/containerd.sock \
	go test -tags e2enode "$@" ./node/ || status=$?
exit $status
