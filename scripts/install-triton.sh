#!/usr/bin/env bash
# Installs a real Triton Inference Server to compare Nereid against: the
# tritonserver that the PyPI wheel nvidia-pytriton bundles (Triton 2.51 with
# only its Python backend), in a virtualenv under .triton/ (ignored by git).
#
#   scripts/install-triton.sh        # installs once, prints the binary's path
#
# Idempotent: a stamp file named after the version marks a finished install;
# a later run only prints the path. Remove .triton/ to start over.
# Progress goes to stderr; stdout holds only the tritonserver path, so
#   TRITONSERVER=$(scripts/install-triton.sh)
# works. To start the server:
#   source .triton/triton-env.sh
#   "$TRITONSERVER" --model-repository=DIR --backend-directory="$TRITON_BACKENDS"
# tests/e2e/test_python_oracle.py runs the Python backend tests against it.
set -euo pipefail

PYTRITON_VERSION=0.7.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${TRITON_DIR:-$ROOT/.triton}
STAMP=$DEST/.nvidia-pytriton-$PYTRITON_VERSION

log() { echo "install-triton: $*" >&2; }

server_path() {
	"$DEST/bin/python" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("pytriton")
if spec is None or not spec.submodule_search_locations:
    sys.exit("pytriton is not installed in this virtualenv")
binary = pathlib.Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "bin" / "tritonserver"
if not binary.is_file():
    sys.exit(f"{binary} is missing")
print(binary)
PY
}

if [[ -f $STAMP && -f $DEST/triton-env.sh ]] && server_path >/dev/null 2>&1; then
	server_path
	exit 0
fi
rm -f "$DEST"/.nvidia-pytriton-*

# The virtualenv's Python decides which of the bundled stubs the models run
# in, so prefer the project's own (the one the e2e tests use).
if [[ -x $ROOT/.venv/bin/python ]]; then
	BASE_PY=$ROOT/.venv/bin/python
else
	BASE_PY=${PYTHON:-python3}
fi

if [[ ! -x $DEST/bin/python ]]; then
	log "making a virtualenv in $DEST with $("$BASE_PY" -c 'import sys; print(sys.version.split()[0])')"
	"$BASE_PY" -m venv "$DEST"
fi
log "installing nvidia-pytriton==$PYTRITON_VERSION (about 100 MB with its dependencies)"
"$DEST/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
	"nvidia-pytriton==$PYTRITON_VERSION" >&2

BIN=$(server_path)
PKG=$(dirname "$(dirname "$BIN")")           # .../site-packages/pytriton/tritonserver
LIBS=$(cd "$PKG/../.." && pwd)/nvidia_pytriton.libs

# The wheel keeps one Python backend stub per Python version (3.8 to 3.13)
# and none in its backends/python/, which PyTriton fills at start-up. Do the
# same once: a backend directory with the stub for this virtualenv's Python.
PYVER=$("$DEST/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
STUB=$PKG/python_backend_stubs/$PYVER/triton_python_backend_stub
if [[ ! -f $STUB ]]; then
	log "the wheel has no Python backend stub for Python $PYVER; it has: $(ls "$PKG/python_backend_stubs" | tr '\n' ' ')"
	exit 1
fi
rm -rf "$DEST/backends"
mkdir -p "$DEST/backends/python"
cp "$PKG/backends/python/libtriton_python.so" "$PKG/backends/python/triton_python_backend_utils.py" "$STUB" \
	"$DEST/backends/python/"
chmod +x "$BIN" "$DEST/backends/python/triton_python_backend_stub"

# What the server needs in its environment:
# - LD_LIBRARY_PATH: the bundled libraries (libcudart, libtritonserver, ...).
#   The binary finds them through its RPATH, but the copied backend and stub
#   no longer do; without it the stub fails to start and the load hangs
#   until stub-timeout-seconds.
# - PATH with this virtualenv's bin first: the stub embeds the system's
#   libpython and finds the virtualenv's site-packages (numpy, which
#   triton_python_backend_utils imports) through the python on PATH, as
#   PyTriton arranges.
{
	echo "# Written by scripts/install-triton.sh; source it before starting tritonserver."
	echo "export TRITONSERVER='$BIN'"
	echo "export TRITON_BACKENDS='$DEST/backends'"
	echo "export LD_LIBRARY_PATH='$LIBS'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
	echo "export PATH='$DEST/bin':\$PATH"
} >"$DEST/triton-env.sh"

touch "$STAMP"
log "done: source $DEST/triton-env.sh, then \"\$TRITONSERVER\" --backend-directory=\"\$TRITON_BACKENDS\" ..."
echo "$BIN"
