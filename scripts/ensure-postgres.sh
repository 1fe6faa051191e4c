#!/usr/bin/env bash
# Debian's PostgreSQL server binaries for the PostgreSQL instance tests (model_factory_tests/
# postgres_server.py starts a throwaway cluster from /usr/lib/postgresql/<major>/bin itself).
# Installs them when missing and we are root (CI, a fresh machine); otherwise says what to run.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
        && compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL server binaries missing: run 'sudo apt-get install -y postgresql'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The tests never use the package's own cluster (15/main on port 5432), only their own.
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
ls -d /usr/lib/postgresql/*/bin/initdb
