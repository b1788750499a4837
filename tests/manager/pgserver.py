"""A throwaway PostgreSQL cluster for the store tests (or an existing server, if named).

``GROUPOSCORE_PG_URL`` names an existing server (a libpq URI of a role that may create
databases); otherwise :func:`start_cluster` runs Debian's ``initdb`` / ``pg_ctl`` in a fresh
temporary directory, listening on a Unix socket there only (no TCP at all). PostgreSQL
refuses to run as root, so under root the cluster belongs to the ``postgres`` system user
(or to ``grouposcore-pg``, created for it). Each test gets its own database.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from urllib.parse import urlsplit

ENV_URL = "GROUPOSCORE_PG_URL"
_USER_FALLBACK = "grouposcore-pg"


class NoServer(Exception):
    """No PostgreSQL server can be used (the reason is the message)."""


@dataclass
class Cluster:
    """A server the tests may create databases on."""

    admin_url: str
    directory: Path | None = None
    run_as: list[str] = field(default_factory=list)
    _names: count[int] = field(default_factory=count)

    def new_database(self) -> str:
        """Create an empty database; return its URL."""
        import psycopg

        name = f"gm_test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        return _with_dbname(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.directory is None:
            return
        pg_ctl = _tool("pg_ctl")
        if pg_ctl is not None:
            subprocess.run(
                [*self.run_as, pg_ctl, "-D", str(self.directory / "data"), "-m", "immediate",
                 "-w", "stop"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


def _with_dbname(url: str, name: str) -> str:
    """The same server URI with another database name (the URI's path)."""
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}/{name}{query}"


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _server_user() -> tuple[list[str], int, int]:
    """The command prefix that runs a tool as a non-root user, and that user's uid/gid."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    runuser = shutil.which("runuser")
    if runuser is None:
        raise NoServer("running as root and runuser is missing")
    for name in ("postgres", _USER_FALLBACK):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return [runuser, "-u", name, "--"], pw.pw_uid, pw.pw_gid
    useradd = shutil.which("useradd")
    if useradd is None:
        raise NoServer("running as root, no postgres user and no useradd to create one")
    subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    _USER_FALLBACK], check=True, capture_output=True)  # fmt: skip
    pw = pwd.getpwnam(_USER_FALLBACK)
    return [runuser, "-u", _USER_FALLBACK, "--"], pw.pw_uid, pw.pw_gid


def start_cluster() -> Cluster:
    """An existing server named by the environment, or a fresh cluster; NoServer if neither."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise NoServer("psycopg 3 is not installed (pip install 'psycopg[binary]')") from None
    url = os.environ.get(ENV_URL)
    if url:
        return Cluster(admin_url=url)
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise NoServer(f"no initdb/pg_ctl on PATH or in /usr/lib/postgresql, and no {ENV_URL}")
    run_as, uid, gid = _server_user()
    directory = Path(tempfile.mkdtemp(prefix="gopg-"))  # short: socket paths are limited
    os.chown(directory, uid, gid)
    cluster = Cluster(
        admin_url=f"postgresql:///postgres?host={directory}&user=postgres",
        directory=directory,
        run_as=run_as,
    )
    data = directory / "data"
    try:
        subprocess.run(
            [*run_as, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
             "-E", "UTF8"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = (
            f"-c listen_addresses='' -k {directory} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(directory / "log"),
             "-w", "-t", "60", "start"],
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as e:
        detail = getattr(e, "stderr", b"") or b""
        cluster.stop()
        raise NoServer(f"cannot start a PostgreSQL cluster: {e} {detail.decode()[-300:]}") from None
    return cluster
