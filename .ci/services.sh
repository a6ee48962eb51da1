#!/usr/bin/env bash
# Prepare the real servers the data-source tests start themselves (see
# tests/conftest.py): PostgreSQL 15 server binaries and a JDK for Spark.
#
# Nothing is started here and no cluster is created: each test run starts a
# throwaway PostgreSQL from the binaries on a free port, and Spark in-process.
# Idempotent; installs only what is missing (Debian/Ubuntu, apt, as root).
#
# Environment: CAMPAIGNCTL_PG_BIN  where initdb/pg_ctl/postgres live
#                                  (default /usr/lib/postgresql/15/bin)
set -euo pipefail

PG_BIN="${CAMPAIGNCTL_PG_BIN:-/usr/lib/postgresql/15/bin}"
# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # apt_install

say() { echo "services: $*"; }

postgres_binaries() {
  if [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/postgres" ]; then
    say "PostgreSQL: $("$PG_BIN/postgres" --version) in $PG_BIN"
    return
  fi
  say "PostgreSQL 15 server binaries missing in $PG_BIN; installing postgresql-15"
  # The tests bring their own data directory: do not let the package create
  # and start a system cluster on port 5432.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/campaignctl-ci.conf
  apt_install postgresql-15
  "$PG_BIN/postgres" --version
}

server_account() {
  # postgres refuses to run as root; as root the fixture runs it as 'postgres'
  # (created by the package) or else 'nobody'.
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1 && ! id nobody >/dev/null 2>&1; then
    say "creating system account 'postgres' to run the test server"
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  fi
}

java_runtime() {
  local java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  if ! command -v "$java" >/dev/null 2>&1; then
    say "no Java; installing openjdk-17-jre-headless for Spark"
    apt_install openjdk-17-jre-headless
    java=java
  fi
  local version
  version="$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  # Spark 4 runs on Java 17 and 21.
  if [ -z "$version" ] || [ "$version" -lt 17 ]; then
    say "Java $version found; Spark needs 17 or 21 (set JAVA_HOME)" >&2
    exit 1
  fi
  say "Java: $("$java" -version 2>&1 | head -1)"
}

postgres_binaries
server_account
java_runtime
