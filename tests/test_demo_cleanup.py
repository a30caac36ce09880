"""The demo leaves nothing behind: scratch files go on SIGTERM too; Gradio's cache is pruned."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")

CHILD = """
import sys
from socioseg.demo import run_demo
run_demo(lambda: None, port=int(sys.argv[1]))
print("returned", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_served(port: int, child: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the demo did not start")


def test_sigterm_removes_the_scratch_folder(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_until_served(port, child)
        assert len(list(Path(tmp_path).glob("socioseg-demo-*"))) == 1
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, output
    assert "returned" in output  # launch returned: Gradio closed its server
    assert list(Path(tmp_path).glob("socioseg-demo-*")) == []


def test_gradio_upload_cache_is_pruned():
    from socioseg.demo import DELETE_CACHE, build_demo

    page = build_demo(lambda: None)
    assert page.delete_cache == DELETE_CACHE
    frequency, age = DELETE_CACHE
    assert 0 < frequency <= age <= 24 * 3600
