#!/usr/bin/env bash
# Builds the file tree of Nereid's container image into OUT:
#
#   OUT/opt/nereid/bin/nereid                         nereid, cgo, stripped
#   OUT/opt/nereid/.ort/lib/libonnxruntime.so.1       ONNX Runtime
#   OUT/opt/nereid/.tf/lib/libtensorflow_*.so.2       TensorFlow, when given
#   OUT/usr/local/bin/{nereid,tritonserver}           links to the binary
#   OUT/models/                                       the default repository
#
# The libraries sit where nereid looks for them next to its binary
# (bin/../.ort/lib, bin/../.tf/lib, as in a checkout after `make ort tf`),
# so the image needs no --backend-config and no environment variable.
# deploy/Dockerfile runs this script in its build stage; tests/deploy runs
# it on the checkout, so both check one tree.
#
# usage: deploy/build-tree.sh [--ort-lib FILE] [--tf-lib-dir DIR] [--go GO] OUT
set -euo pipefail

ort_lib=.ort/lib/libonnxruntime.so.1
tf_dir=
go=${GO:-go}
while [[ $# -gt 1 ]]; do
	case $1 in
	--ort-lib) ort_lib=$2; shift 2 ;;
	--tf-lib-dir) tf_dir=$2; shift 2 ;;
	--go) go=$2; shift 2 ;;
	*) echo "build-tree.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
if [[ $# -ne 1 || $1 == -* ]]; then
	echo "usage: deploy/build-tree.sh [--ort-lib FILE] [--tf-lib-dir DIR] [--go GO] OUT" >&2
	exit 2
fi
out=$1
cd "$(dirname "$0")/.."

if [[ ! -f $ort_lib ]]; then
	echo "build-tree.sh: no ONNX Runtime library at $ort_lib (run make ort, or pass --ort-lib)" >&2
	exit 1
fi

mkdir -p "$out/opt/nereid/bin" "$out/opt/nereid/.ort/lib" "$out/usr/local/bin" "$out/models"
# -trimpath and -s -w: no build paths, no symbol tables (about a quarter
# of the binary); cgo for the ONNX Runtime, TensorFlow and CUDA loaders.
CGO_ENABLED=1 "$go" build -trimpath -ldflags='-s -w' -o "$out/opt/nereid/bin/nereid" ./cmd/nereid
install -m 0644 "$ort_lib" "$out/opt/nereid/.ort/lib/libonnxruntime.so.1"
if [[ -n $tf_dir ]] && compgen -G "$tf_dir/libtensorflow*.so.2" >/dev/null; then
	mkdir -p "$out/opt/nereid/.tf/lib"
	install -m 0755 "$tf_dir"/libtensorflow_cc.so.2 "$tf_dir"/libtensorflow_framework.so.2 "$out/opt/nereid/.tf/lib/"
fi
ln -sfn ../../../opt/nereid/bin/nereid "$out/usr/local/bin/nereid"
# For manifests written for Triton's image that set `command: [tritonserver]`.
ln -sfn ../../../opt/nereid/bin/nereid "$out/usr/local/bin/tritonserver"
chmod 0755 "$out/models"
