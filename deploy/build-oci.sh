#!/usr/bin/env bash
# Builds Nereid's minimal image (deploy/Dockerfile's runtime target) as an
# OCI image layout, without a container daemon or registry:
#
#   layer 1: a distroless/cc-debian12-like base from this machine's
#            Debian 12 packages (deploy/debian-base.sh)
#   layer 2: the tree the Dockerfile's build stage makes (deploy/build-tree.sh)
#   config:  user, ports, entrypoint and command of the Dockerfile's runtime stage
#
# Load it with `skopeo copy oci:OUT:TAG docker-daemon:TAG` or push it with
# `skopeo copy oci:OUT:TAG docker://REGISTRY/nereid:TAG`.
#
# --tree DIR takes a tree build-tree.sh made instead of building one.
#
# usage: deploy/build-oci.sh [--deploytool PATH] [--ort-lib FILE] [--tree DIR] OUT [TAG]
set -euo pipefail
deploytool=.tools/deploytool
ort_lib=.ort/lib/libonnxruntime.so.1
tree=
while [[ $# -gt 0 && $1 == --* ]]; do
	case $1 in
	--deploytool) deploytool=$2; shift 2 ;;
	--ort-lib) ort_lib=$2; shift 2 ;;
	--tree) tree=$2; shift 2 ;;
	*) echo "build-oci.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
if [[ $# -lt 1 || $# -gt 2 ]]; then
	echo "usage: deploy/build-oci.sh [--deploytool PATH] [--ort-lib FILE] [--tree DIR] OUT [TAG]" >&2
	exit 2
fi
out=$1
tag=${2:-nereid:0.1.0}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deploy/debian-base.sh "$work/base"
if [[ -z $tree ]]; then
	tree=$work/tree
	deploy/build-tree.sh --ort-lib "$ort_lib" "$tree"
fi
rm -rf "$out"
"$deploytool" oci -out "$out" -tag "$tag" -layer "$work/base" -layer "$tree" \
	-owner home/nonroot=65532:65532 -dockerfile deploy/Dockerfile -target runtime
