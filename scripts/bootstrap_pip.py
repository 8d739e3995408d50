"""Install pip into a virtualenv created with --without-pip.

Debian's python3 lacks ensurepip unless the python3-venv package is
installed, so `python3 -m venv` fails there. `make venv` then creates the
virtualenv without pip and runs this script with the virtualenv's python: it
fetches the pinned pip wheel from PyPI's simple index, checks its sha256
against the index, and installs pip from the wheel itself (a wheel is importable as
a zip file).

Run it only with the virtualenv's interpreter.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

PIP_VERSION = "26.3"
INDEX = os.environ.get("PIP_BOOTSTRAP_INDEX", "https://pypi.org/simple")


def main() -> int:
    if sys.prefix == sys.base_prefix:
        print("bootstrap_pip.py must run inside the virtualenv", file=sys.stderr)
        return 2
    # The PEP 691 JSON form of the simple index lists files with hashes.
    req = urllib.request.Request(
        f"{INDEX}/pip/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        meta = json.load(resp)
    filename = f"pip-{PIP_VERSION}-py3-none-any.whl"
    wheel = next(f for f in meta["files"] if f["filename"] == filename)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, filename)
        url = urllib.parse.urljoin(f"{INDEX}/pip/", wheel["url"])
        with urllib.request.urlopen(url, timeout=300) as resp:
            data = resp.read()
        if hashlib.sha256(data).hexdigest() != wheel["hashes"]["sha256"]:
            print(f"sha256 mismatch for {filename}", file=sys.stderr)
            return 1
        with open(path, "wb") as f:
            f.write(data)
        cmd = [sys.executable, os.path.join(path, "pip"), "install", "--no-index", path]
        return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
