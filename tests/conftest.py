"""Shared fixtures: real servers, never mocks.

- ``postgres_dsn`` (session): a throwaway PostgreSQL 15 server started from the
  binaries in $CAMPAIGNCTL_PG_BIN (default /usr/lib/postgresql/15/bin), one
  fresh database, torn down after the run. Yields a libpq DSN.
- ``postgres_schema`` (function): a fresh, empty schema in that database, so
  tests that load tables never see each other's.
- ``spark`` (session): one local[2] SparkSession (UTC, 4 shuffle partitions, no
  UI) shared by every Spark test; starting the JVM costs seconds, so it is
  started once and only when a test asks for it. A Spark *data source* created
  while it runs attaches to it (SparkSession.newSession) instead of starting
  another JVM; ``spark_conf`` (session) holds its settings.

Both skip with the reason when their runtime is missing (no PostgreSQL
binaries; no Java or PySpark). CI installs them (.ci/services.sh), so there
they run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # PySpark 4.x warns on import that pandas 3 is "not yet fully supported";
    # the sources use Arrow (toArrow), not pandas, so the warning is noise.
    config.addinivalue_line("filterwarnings", "ignore:PySpark does not yet fully support pandas:FutureWarning")


def skip_unless_ci(reason: str) -> None:
    """On a developer's machine a missing server skips its tests; in CI (which
    installs them, .ci/services.sh) it is a failure, so nothing passes unrun."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} — CI must run these tests")
    pytest.skip(reason)


PG_BIN = Path(os.environ.get("CAMPAIGNCTL_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_SUPERUSER = "campaignctl"
PG_DATABASE = "campaignctl_test"


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class _PgServer:
    data_dir: Path
    port: int
    os_user: str | None  # the account the server runs as; None: the current one

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_SUPERUSER} dbname=postgres"


def _pg_os_user() -> str | None:
    """postgres refuses to run as root, so as root we run it as another account:
    the distribution's ``postgres`` user when the package created one, else
    ``nobody`` (always present on Debian); as non-root we run it as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL")


def _run_as(os_user: str | None, args: list[str]) -> subprocess.CompletedProcess:
    """Run a PostgreSQL binary as ``os_user``; subprocess drops root for us
    (user=/group=), and extra_groups=[] clears root's supplementary groups."""
    kwargs: dict = {}
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    # cwd=/ : the server must not inherit a working directory its user cannot read.
    return subprocess.run(args, capture_output=True, text=True, cwd="/", timeout=120, check=False, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_pg_server() -> _PgServer:
    os_user = _pg_os_user()
    # Not pytest's tmp_path: that lives under a root-only 0700 directory the
    # server's account could not enter.
    base = Path(tempfile.mkdtemp(prefix="campaignctl-pg-"))
    data_dir = base / "data"
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    init = _run_as(
        os_user,
        [str(PG_BIN / "initdb"), "-D", str(data_dir), "-U", PG_SUPERUSER, "-A", "trust",
         "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    # A throwaway server: durability off (fsync, WAL) makes loads several times faster.
    # The socket goes into the data directory: /var/run/postgresql may not exist or be writable.
    settings = (
        "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        f"-c unix_socket_directories={data_dir} -c shared_buffers=128MB -c max_connections=30 -c TimeZone=UTC"
    )
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        started = _run_as(
            os_user,
            [str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-l", str(base / "server.log"), "-w", "-t", "60",
             "-o", f"{settings} -p {port}", "start"],
        )
        if started.returncode == 0:
            return _PgServer(data_dir, port, os_user)
    log = (base / "server.log").read_text(errors="replace") if (base / "server.log").exists() else ""
    shutil.rmtree(base, ignore_errors=True)
    pytest.fail(f"PostgreSQL did not start:\n{started.stderr}\n{log[-3000:]}")


def _stop_pg_server(server: _PgServer) -> None:
    # immediate: no checkpoint, the data is thrown away anyway.
    _run_as(server.os_user, [str(PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate", "-w", "stop"])
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN for an empty database on a PostgreSQL 15 server started for this run."""
    if not (PG_BIN / "pg_ctl").exists():
        skip_unless_ci(f"PostgreSQL server binaries not found in {PG_BIN} (set CAMPAIGNCTL_PG_BIN, or run .ci/services.sh)")
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install -e .[test])")
    server = _start_pg_server()
    try:
        with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
        yield f"host=127.0.0.1 port={server.port} user={PG_SUPERUSER} dbname={PG_DATABASE}"
    finally:
        _stop_pg_server(server)


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A new empty schema (its name) in the test database, dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


# --------------------------------------------------------------------------- Spark


@pytest.fixture(scope="session")
def spark_conf() -> dict[str, str]:
    """Settings for Spark in tests: small and quiet on a shared 2-core machine.
    Pass them as a Spark data source's ``conf`` option too, so the plugin's
    builder asks for what the running session already has."""
    return {
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "1g",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


@pytest.fixture(scope="session")
def spark(spark_conf: dict[str, str]):
    """One local[2] SparkSession for the whole run, stopped at the end."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        skip_unless_ci("Java is not installed (Spark needs a JDK 17 or 21)")
    pyspark_sql = pytest.importorskip("pyspark.sql", reason="PySpark is not installed (pip install -e .[test])")
    builder = pyspark_sql.SparkSession.builder.master("local[2]").appName("campaignctl-tests")
    for key, value in spark_conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
