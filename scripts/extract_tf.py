#!/usr/bin/env python3
"""Keeps what Nereid needs of a tensorflow-cpu wheel.

    python scripts/extract_tf.py WHEEL DIR

writes DIR/lib/libtensorflow_cc.so.2 and DIR/lib/libtensorflow_framework.so.2
(the C API and the runtime it links) and DIR/include/ with the C API
headers (tensorflow/c/c_api.h, tf_tensor.h, tf_tstring.h and what they
include). Nothing else of the wheel is unpacked. `make tf` runs it after
checking the wheel's sha256.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import sys
import zipfile

LIBRARIES = ("tensorflow/libtensorflow_cc.so.2", "tensorflow/libtensorflow_framework.so.2")
INCLUDE = "tensorflow/include/"
# The C API headers Nereid's binding is checked against; every header they
# include, transitively, comes along.
ROOT_HEADERS = ("tensorflow/c/c_api.h", "tensorflow/c/tf_tensor.h", "tensorflow/c/tf_tstring.h")


def header_closure(z: zipfile.ZipFile, names: set) -> list:
    """The root headers and every header they include, as wheel names."""
    todo, seen = list(ROOT_HEADERS), set()
    while todo:
        h = todo.pop()
        if h in seen or INCLUDE + h not in names:
            continue  # system headers, and ones the wheel leaves out
        seen.add(h)
        todo += re.findall(r'#include\s+"([^"]+)"', z.read(INCLUDE + h).decode())
    return sorted(INCLUDE + h for h in seen)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {argv[0]} WHEEL DIR", file=sys.stderr)
        return 2
    wheel, out = pathlib.Path(argv[1]), pathlib.Path(argv[2])
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for lib in LIBRARIES:
            if lib not in names:
                print(f"{wheel}: no {lib}", file=sys.stderr)
                return 1
            dst = out / "lib" / pathlib.Path(lib).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            with z.open(lib) as src, open(dst, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
            dst.chmod(0o755)
        headers = header_closure(z, names)
        for name in headers:
            dst = out / "include" / name[len(INCLUDE):]
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(z.read(name))
    print(f"{out}: {len(LIBRARIES)} libraries, {len(headers)} headers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
