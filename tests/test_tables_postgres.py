"""The table tool against a real PostgreSQL server (Debian's package; .ci/run installs it), started here in a
temporary folder on a Unix socket only, and stopped at the end. Skipped, with the reason, where it is missing."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from edgedistill.sqlguard import QueryRefused
from edgedistill.tables import QueryFailed, open_tables


def postgres_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    folder = Path(tempfile.mkdtemp(prefix="edgedistill-pg-"))   # not under pytest's root-only tmp: the server's user
    as_user: list[str] = []                                       # must reach it
    if os.geteuid() == 0:   # the server refuses to run as root: as Debian's `postgres` user
        if not shutil.which("runuser") or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a `postgres` user to start the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        os.chmod(folder, 0o700)
    data, port = folder / "data", free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "-A", "trust"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=''", "start"], check=True, capture_output=True)
    try:
        import psycopg
        with psycopg.connect(host=str(folder), port=port, user="postgres", dbname="postgres", autocommit=True) as admin:
            admin.execute("CREATE TABLE fmea (equipment text, component text, severity int, rpn int)")
            admin.execute("INSERT INTO fmea VALUES ('Filler', 'Product pump', 7, 126), ('Capper', 'Cap chute', 5, 60),"
                          " ('Capper', 'Spindle bearing', 8, 192)")
            admin.execute("CREATE TABLE payroll (name text, salary int)")      # not the reader's to see
            admin.execute("CREATE ROLE plant_reader LOGIN")
            admin.execute("GRANT SELECT ON fmea TO plant_reader")
            admin.execute("ALTER ROLE plant_reader SET default_transaction_read_only = on")
        yield f"postgresql://plant_reader@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_same_tool_reads_a_postgresql_server(server):
    tool = open_tables([server])
    try:
        assert [t.name for t in tool.tables] == ["fmea"]        # payroll: no SELECT grant, not shown
        assert "equipment text 'Capper'|'Filler'" in __import__("edgedistill.tables").tables.schema_text(tool.tables)
        assert tool.run("SELECT rpn FROM fmea WHERE component ILIKE 'cap chute'").rows == ((60,),)
        assert tool.run("SELECT equipment FROM fmea GROUP BY equipment ORDER BY sum(rpn) DESC LIMIT 1").rows == \
            (("Capper",),)
        for refused in ("DELETE FROM fmea", "SELECT * FROM payroll", "SELECT pg_sleep(5)",
                        "SELECT set_config('default_transaction_read_only', 'off', false)",
                        "SELECT pg_read_file('/etc/passwd')", "COPY fmea TO '/tmp/x'"):
            with pytest.raises(QueryRefused):
                tool.run(refused)
        with pytest.raises(QueryFailed) as missing:
            tool.run("SELECT boiler_pressure FROM fmea")
        assert missing.value.missing
        with pytest.raises(QueryFailed, match="time limit"):
            tool.run("SELECT count(*) FROM fmea a, fmea b, fmea c, fmea d, fmea e, fmea f, fmea g, fmea h, fmea i, "
                     "fmea j, fmea k, fmea l, fmea m, fmea n, fmea o, fmea p, fmea q, fmea r, fmea s, fmea t")
        # the second lock on its own: the role and the read-only transaction refuse a write the parser never saw
        import psycopg
        with pytest.raises(psycopg.Error):
            tool._connection.execute("DELETE FROM fmea")
        tool._connection.rollback()
        assert tool.run("SELECT count(*) FROM fmea").rows == ((3,),)
    finally:
        tool.close()
