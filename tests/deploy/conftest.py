"""Fixtures for the deployment tests; the helpers are in deploy_util.py."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from deploy_util import Server


@pytest.fixture
def servers(tmp_path):
    started = []

    def start(argv, http_port, **kwargs) -> Server:
        if not pathlib.Path(argv[0]).exists() and not shutil.which(str(argv[0])):
            pytest.fail(f"{argv[0]} does not exist: run `make build` first")
        s = Server(argv, tmp_path / f"nereid-{len(started)}.log", http_port, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
