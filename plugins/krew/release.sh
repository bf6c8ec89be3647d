#!/usr/bin/env bash
# Builds the kubectl plugin archives and writes the krew manifest that
# installs them (docs/kubectl-plugin.md):
#
#   plugins/krew/release.sh VERSION URI_BASE [OUT_DIR]
#
#   VERSION   semver with a leading v, e.g. v0.1.0 (krew requires it)
#   URI_BASE  where the archives will be downloadable, e.g. the release's
#             download folder; each platform's uri is URI_BASE/<archive>
#   OUT_DIR   default dist/krew; gets kubectl-dualstack_<version>_<os>_<arch>.tar.gz
#             per platform and dualstack.yaml
#
# PLATFORMS (default "linux/amd64 linux/arm64 darwin/amd64 darwin/arm64")
# chooses the platforms. The manifest's sha256 are those of the archives just
# built, so the manifest and the archives are published together; nothing in
# it is a placeholder. Install before publishing, the way krew does:
#
#   kubectl krew install --manifest=dist/krew/dualstack.yaml \
#     --archive=dist/krew/kubectl-dualstack_v0.1.0_linux_amd64.tar.gz
#
# Archives are reproducible (-trimpath, fixed mtime and owner, gzip -n).
set -euo pipefail

if [[ $# -lt 2 ]]; then
	sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
version=$1 uri_base=${2%/} out=${3:-dist/krew}
if [[ ! $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
	echo "release.sh: VERSION must look like v1.2.3, got $version" >&2
	exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
module=$(cd "$root" && go list -m)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

platforms=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}
entries=""
for p in $platforms; do
	os=${p%/*} arch=${p#*/}
	archive="kubectl-dualstack_${version}_${os}_${arch}.tar.gz"
	mkdir -p "$work/$os-$arch"
	# The same binary as dualstack-webhook: main.go dispatches on the name
	# kubectl-dualstack.
	(cd "$root" && CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false \
		-ldflags "-s -w" -o "$work/$os-$arch/kubectl-dualstack" .)
	tar -C "$work/$os-$arch" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		-cf - kubectl-dualstack | gzip -n -9 >"$out/$archive"
	sum=$(sha256sum "$out/$archive" | cut -d' ' -f1)
	entries+="
  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $uri_base/$archive
    sha256: $sum
    bin: kubectl-dualstack
    files:
      - from: kubectl-dualstack
        to: ."
	echo "release.sh: $archive $sum" >&2
done

cat >"$out/dualstack.yaml" <<MANIFEST
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: dualstack
spec:
  version: $version
  homepage: https://$module
  shortDescription: Dual-stack Service address pools and ServiceCIDR changes
  description: |
    kubectl dualstack runs the operator commands of dualstack-webhook:
    status (what each address pool has left), plan and apply (ServiceCIDR
    reconfigurations: extend, single-to-dual, dual-to-single,
    replace-primary) and convert (rewrite the alpha spec.ipFamily of
    Service manifests). It takes kubectl's --kubeconfig, --context,
    -n/--namespace (the webhook's namespace) and -o.
  platforms:$entries
MANIFEST
echo "$out/dualstack.yaml"
