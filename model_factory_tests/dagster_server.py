"""A real `dagster dev` (webserver + daemon + code server) for tests, on a temporary instance.

It runs in its own process group on a free port of 127.0.0.1 and is torn down as a group: a
`dagster dev` whose parent ignored SIGINT also ignores SIGTERM (DAGSTER_NOTES), so the child's
signal dispositions are reset before it execs, and whatever survives the grace period is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "model_factory.definitions"  # workspace.yaml names no location: the module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Resets SIGINT/SIGTERM to their defaults, then execs `python -m dagster ...` (no preexec_fn:
# it is unsafe in a threaded parent such as an xdist worker).
_EXEC_DAGSTER = (
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM):\n"
    "    signal.signal(s, signal.SIG_DFL)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'dagster', *sys.argv[1:]])"
)


def wait_for(
    what: str, check: Callable[[], Any], timeout: float, every: float = 1.0, log: Path | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` (and the log's tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(every)


@dataclass
class DagsterServer:
    root: Path
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen | None = None
    started_in: float = 0.0
    _instance: dg.DagsterInstance | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dagster_home(self) -> Path:
        return Path(self.env["DAGSTER_HOME"])

    def start(self, timeout: float = 180) -> DagsterServer:
        started = time.monotonic()
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _EXEC_DAGSTER,
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        wait_for("the code location to load", self._location_loaded, timeout, log=self.log)
        self.started_in = time.monotonic() - started
        return self

    def _location_loaded(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"dagster dev exited with {self.process.returncode}:\n"
                + self.log.read_text(errors="replace")[-4000:]
            )
        try:
            data = self.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
                name locationOrLoadError { __typename } } } } }""")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False
        entries = data["workspaceOrError"].get("locationEntries", [])
        kinds = {e["name"]: (e["locationOrLoadError"] or {}).get("__typename") for e in entries}
        if kinds.get(LOCATION) == "PythonError":
            raise RuntimeError(f"the code location failed to load:\n{json.dumps(data)[:4000]}")
        return kinds.get(LOCATION) == "RepositoryLocation"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def instance(self) -> dg.DagsterInstance:
        """The same instance the server uses (SQLite under DAGSTER_HOME), read from the test."""
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        return self._instance

    def stop(self, grace: float = 30) -> None:
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None
        if self.process is None or self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is left goes too
            os.killpg(pgid, signal.SIGKILL)
        self.process.wait(timeout=30)
