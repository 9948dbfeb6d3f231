"""The store against a real PostgreSQL started on loopback for this test run.

The whole store contract of test_store.py runs here again against PostgreSQL (a fresh database
per test), so both engines are held to one specification; then what only PostgreSQL has.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from core.errors import StoreError
from retrieval.records import Event, Item
from retrieval.store import Store, mask_url
from test_store import StoreContract  # pytest puts tests/ on sys.path (rootdir-less "prepend" mode)

pytestmark = pytest.mark.integration


def _pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed by the distribution, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    """A throwaway PostgreSQL cluster in a temporary directory (run as `postgres` when we are root)."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="recassist-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            pwd.getpwnam("postgres")  # KeyError: no such user
            shutil.chown(self.dir, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]

    def run(self, tool: str, *args: str) -> None:
        subprocess.run(
            self.prefix + [str(self.bin_dir / tool), *args],
            check=True, capture_output=True, text=True, timeout=60,
        )

    def start(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                 "--locale=C", "--no-sync")
        self.pg_ctl("start")

    def pg_ctl(self, action: str) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        args = ["-D", str(self.data), "-w", "-t", "30"]
        if action in ("start", "restart"):
            args += ["-l", str(self.log), "-o", options]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        self.run("pg_ctl", action, *args)

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no server log)"

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on 127.0.0.1 for the session; skipped if PostgreSQL is not installed."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'recassist[postgres]'")
    bin_dir = _pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    try:
        server = _Server(bin_dir)
    except KeyError:
        pytest.skip("running as root but there is no 'postgres' user to run the server as")
    try:
        server.start()
        psycopg.connect(server.url(), connect_timeout=10).close()
    except (subprocess.SubprocessError, psycopg.Error) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        tail = server.log_tail()
        server.remove()
        pytest.skip(f"PostgreSQL did not start: {detail.strip()[-500:]}\n{tail}")
    yield server
    try:
        server.pg_ctl("stop")
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server):
    """A URL whose tables land in a brand-new, empty schema (much cheaper than a new database)."""
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    yield postgres_server.url() + f"?options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store_url(self, postgres_url):
        return postgres_url


# -- what only PostgreSQL has: a network, passwords, several processes, restarts ---------------


def test_unreachable_server_names_host_and_port():
    pytest.importorskip("psycopg")
    port = _free_port()  # nothing listens there
    with pytest.raises(StoreError) as err:
        Store.open(f"postgresql://someone:hunter2@127.0.0.1:{port}/nowhere?connect_timeout=3")
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message
    assert "nowhere" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://bob:s3cret@db:5432/rec", "postgresql://bob:***@db:5432/rec"),
        ("postgresql://bob@db/rec", "postgresql://bob@db/rec"),
        ("postgresql://db/rec?password=s3cret&sslmode=require", "postgresql://db/rec?password=***&sslmode=require"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_password_is_masked(url, shown):
    assert mask_url(url) == shown


def test_store_repr_hides_password(postgres_server, postgres_url):
    import psycopg

    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute("DO $$ BEGIN CREATE ROLE alice LOGIN PASSWORD 'pw-alice' SUPERUSER;"
                      " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    url = postgres_url.replace("postgres@", "alice:pw-alice@")
    with Store.open(url) as store:
        store.add_events([Event("u", "like", 1.0, "a")])
        assert "pw-alice" not in repr(store) and "pw-alice" not in str(store) and "pw-alice" not in store.url
        assert "alice:***@" in store.url


def test_two_workers_share_one_database(postgres_url):
    """Two API workers (two Store objects) see each other's writes and never duplicate events."""
    events = [Event("u1", "view", float(t), "i1") for t in range(50)]
    with Store.open(postgres_url) as a, Store.open(postgres_url) as b:
        a.upsert_items([Item("i1", "One")])
        barrier = threading.Barrier(2)
        added = []

        def add(store):
            barrier.wait()
            added.append(store.add_events(events))

        threads = [threading.Thread(target=add, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(added) == 50
        assert b.get_item("i1").title == "One"
        assert a.event_count() == b.event_count() == 50


def test_server_restart_costs_at_most_one_failed_call(postgres_server, postgres_url):
    """Connections killed by a restart are dropped from the pool together; later calls reconnect."""
    with Store.open(postgres_url) as store:
        store.upsert_items([Item("i1", "One")])
        barrier = threading.Barrier(4)

        def hold_a_connection():  # leave several connections idle in the pool
            barrier.wait()
            store.item_count()

        threads = [threading.Thread(target=hold_a_connection) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        postgres_server.pg_ctl("restart")
        failures = 0
        for _ in range(6):
            try:
                assert store.item_count() == 1
            except StoreError as exc:
                assert "failed" in str(exc)
                failures += 1
        assert failures <= 1
