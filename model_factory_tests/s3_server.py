"""A real S3-compatible server on loopback for the tests: moto's S3 over HTTP, in a subprocess.

Run as ``python -m model_factory_tests.s3_server``: it binds 127.0.0.1 on a free port, prints
``READY <port>`` and serves until killed. Two adjustments in front of moto, both at the HTTP
layer, so the client (s3fs, botocore) sees a server and nothing else:

* Requests are served one at a time. AWS evaluates ``If-None-Match: *`` atomically; moto checks
  for the key and stores it in two steps, so two racing conditional PUTs could both succeed on a
  threaded moto. Serialising requests makes moto as atomic as the service it stands in for (the
  race tests are about our code, not moto's).
* Buckets whose name starts with ``REJECTS_CONDITIONAL`` answer any request carrying
  ``If-None-Match`` with 501 NotImplemented, as S3-compatible servers without conditional
  writes do; buckets starting with ``IGNORES_CONDITIONAL`` drop the header, as a server (or a
  proxy) that silently overwrites would.
* Buckets whose name starts with ``DENIES_DELETE`` answer every DELETE with 403 AccessDenied, as
  a write-once bucket whose policy allows PutObject but denies DeleteObject does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REJECTS_CONDITIONAL = "mf-no-cond-501-"
IGNORES_CONDITIONAL = "mf-no-cond-drop-"
DENIES_DELETE = "mf-no-delete-"

_NOT_IMPLEMENTED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NotImplemented</Code>'
    b"<Message>A header you provided implies functionality that is not "
    b"implemented</Message><Header>If-None-Match</Header></Error>"
)
_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


def _bucket(environ: dict) -> str:
    """The bucket of a path-style request (what botocore sends to an IP endpoint)."""
    return environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]


def make_app():
    from moto.server import DomainDispatcherApplication, create_backend_app

    moto = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def app(environ: dict, start_response) -> Iterable[bytes]:
        bucket = _bucket(environ)
        if bucket.startswith(DENIES_DELETE) and environ.get("REQUEST_METHOD") == "DELETE":
            start_response(
                "403 Forbidden",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(_ACCESS_DENIED)))],
            )
            return [_ACCESS_DENIED]
        if "HTTP_IF_NONE_MATCH" in environ:
            if bucket.startswith(REJECTS_CONDITIONAL):
                start_response(
                    "501 Not Implemented",
                    [
                        ("Content-Type", "application/xml"),
                        ("Content-Length", str(len(_NOT_IMPLEMENTED))),
                    ],
                )
                return [_NOT_IMPLEMENTED]
            if bucket.startswith(IGNORES_CONDITIONAL):
                del environ["HTTP_IF_NONE_MATCH"]
        with lock:  # the whole request, body included, so moto's check-then-store is atomic
            return [b"".join(moto(environ, start_response))]

    return app


def race_write(path: str, data: bytes, barrier, results) -> None:
    """One contender of the write race (a spawned process; kept here so that it imports the
    storage layer only, not the test module and XGBoost)."""
    import fsspec

    from model_factory.core.storage import write_exclusive

    fs = fsspec.filesystem("s3")
    barrier.wait(timeout=120)
    results.put((data, write_exclusive(fs, path, data)))


def race_publish(args: tuple[str, str, str]) -> str:
    """One contender of the publish race (a spawned process)."""
    from model_factory.contracts import PublishBundleRequest
    from model_factory.core.registry import FileRegistry

    registry_url, uri, bundle_id = args
    return (
        FileRegistry(registry_url)
        .publish(PublishBundleRequest(bundle_uri=uri, bundle_id=bundle_id))
        .status
    )


def serve() -> None:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, make_app(), threaded=True)
    # The parent holds our stdin open: when it goes, even killed, the server goes too.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    print(f"READY {server.server_port}", flush=True)
    server.serve_forever()


@dataclass
class S3Server:
    """The server subprocess and the environment a client needs to reach it."""

    home: Path
    process: subprocess.Popen | None = None
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> S3Server:
        log = (self.home / "s3-server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "model_factory_tests.s3_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=Path(__file__).resolve().parents[1],
        )
        ready: list[str] = []
        reader = threading.Thread(
            target=lambda: ready.append(self.process.stdout.readline().decode()), daemon=True
        )
        reader.start()
        reader.join(timeout)
        if not ready or not ready[0].startswith("READY "):
            self.stop()
            raise RuntimeError(
                f"the S3 server did not start: {ready} "
                f"{(self.home / 's3-server.log').read_text()[-2000:]}"
            )
        self.port = int(ready[0].split()[1])
        # Dummy credentials and empty config files: no real AWS profile is ever read.
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "model-factory-test",
            "AWS_SECRET_ACCESS_KEY": "model-factory-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            # Polars' own object store (scan_parquet on s3:// URLs) reads these too.
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
        }
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}


if __name__ == "__main__":
    serve()
