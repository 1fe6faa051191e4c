"""A throwaway PostgreSQL server for tests, from Debian's binaries, on 127.0.0.1 and a free port.

`initdb` refuses to run as root, so as root the cluster is created and run as the `postgres` user
(the Debian package creates it) or, failing that, `nobody`. The data directory lives in its own
`/tmp/mf-pg-*` folder (pytest's tmp dirs are 0700 root-owned, so that user could not enter them),
and is removed on stop. `scripts/ensure-postgres.sh` installs the binaries; CI sets
MODEL_FACTORY_REQUIRE_SERVERS=1 so that a missing server fails the tests instead of skipping them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from model_factory_tests.dagster_server import free_port

REQUIRE_SERVERS = "MODEL_FACTORY_REQUIRE_SERVERS"


class NoServer(RuntimeError):
    """No PostgreSQL server could be started here (binaries missing, no usable user, ...)."""


def pg_bindir() -> Path:
    """The newest installed `/usr/lib/postgresql/<major>/bin` holding initdb and pg_ctl."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise NoServer(
            "no /usr/lib/postgresql/*/bin/initdb: run 'bash scripts/ensure-postgres.sh' "
            "(as root it installs Debian's postgresql package)"
        )
    return Path(found[-1]).parent


def _server_user() -> str | None:
    """The user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise NoServer("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    """One cluster with one database, password-authenticated on 127.0.0.1:port."""

    root: Path
    port: int
    user: str = "model_factory"
    password: str = ""
    db_name: str = "dagster"
    os_user: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment variables dagster.postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        cmd = [*(["runuser", "-u", self.os_user, "--"] if self.os_user else []), *argv]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
        if out.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise NoServer(
                f"{' '.join(argv[:2])} failed ({out.returncode}): "
                f"{out.stderr.strip()[-2000:]}\n{tail}"
            )
        return out

    def start(self) -> PostgresServer:
        bindir = pg_bindir()
        self.os_user = _server_user()
        self.password = self.password or secrets.token_hex(12)
        data = self.root / "data"
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.os_user:
            # The server's own user must own its folder (initdb/postgres refuse otherwise).
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        # scram-sha-256 for every connection: the test really goes through DAGSTER_PG_PASSWORD.
        self._run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        # Loopback only, the unix socket in our folder (not /var/run/postgresql), no fsync: a
        # throwaway cluster; max_connections above the default for webserver + daemon + runs.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        with contextlib.closing(self.connect("postgres")) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.db_name}"')
        return self

    def connect(self, db_name: str | None = None):
        import psycopg2  # installed with dagster-postgres

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=db_name or self.db_name,
            connect_timeout=10,
        )

    def query(self, sql: str, *params) -> list[tuple]:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(NoServer, subprocess.TimeoutExpired):
                self._run(
                    str(pg_bindir() / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                )
        shutil.rmtree(self.root, ignore_errors=True)


def start_or_skip() -> PostgresServer:
    """Start a server; without one, skip loudly, or fail when the environment demands servers."""
    root = Path(tempfile.mkdtemp(prefix="mf-pg-"))
    server = PostgresServer(root=root, port=free_port())
    try:
        return server.start()
    except NoServer as exc:
        server.stop()
        message = f"NO POSTGRESQL SERVER: {exc}"
        if os.environ.get(REQUIRE_SERVERS) == "1":
            pytest.fail(f"{message} ({REQUIRE_SERVERS}=1: CI must run these tests)", pytrace=False)
        print(f"\n{'!' * 100}\n{message}\nSKIPPING the PostgreSQL tests\n{'!' * 100}")
        pytest.skip(message)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_or_skip()
    try:
        yield server
    finally:
        server.stop()
