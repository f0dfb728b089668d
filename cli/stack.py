"""Starting and stopping the platform's processes (used by `saas-llm up`, the tests and bench)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A child process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        """Poll `url` until it answers 2xx; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited ({self.popen.returncode}):\n{self.log_tail()}"
                )
            try:
                response = httpx.get(url, timeout=2.0)
                if response.status_code < 300:
                    return
                last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        tail = self.log_tail()
        self.kill()  # a process that never became ready must not outlive its caller
        raise RuntimeError(f"{self.name} not ready at {url} after {timeout}s ({last!r}):\n{tail}")

    def wait_log(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            if needle in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        tail = self.log_tail()
        self.kill()
        raise RuntimeError(f"{self.name}: {needle!r} not seen in {timeout}s:\n{tail}")

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(5)


def _pdeathsig_hook() -> Any:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies (None elsewhere).

    libc is loaded here, in the parent: the child may already run as another user that cannot
    read this interpreter's files.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


def spawn(
    name: str,
    argv: list[str],
    env: dict[str, str],
    log_dir: Path,
    *,
    own_group: bool = False,
    **popen: Any,
) -> Proc:
    """Start `argv` with output to `log_dir/<name>.log`.

    `own_group` puts the child in its own process group, out of reach of a terminal's Ctrl-C, so
    that the parent stops its children itself, in order; it also ties the child's life to the
    parent's.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    if own_group:
        popen.setdefault("process_group", 0)
        hook = _pdeathsig_hook()
        if hook is not None:
            popen.setdefault("preexec_fn", hook)
    popen.setdefault("cwd", ROOT)
    popen_obj = subprocess.Popen(
        argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
    )
    log_file.close()
    return Proc(name, popen_obj, log_path)


def proxy_env(env: dict[str, str]) -> dict[str, str]:
    """The proxy runs offline; proxy/start.py drops DATABASE_URL (no LiteLLM database here)."""
    out = {k: v for k, v in env.items() if k != "LITELLM_USE_DATABASE"}
    out["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    out.setdefault("LITELLM_LOG", "ERROR")
    return out


def write_proxy_config(path: Path, models: list[dict[str, Any]]) -> Path:
    """A proxy config serving `models`; retries are ours, so the proxy makes none. The response
    cache answers only requests that ask (teams with caching on); proxy/start.py points it at
    the environment's Redis, or turns it off without one."""
    config = {
        "model_list": models,
        "litellm_settings": {
            "num_retries": 0,
            "request_timeout": 600,
            "drop_params": True,
            "cache": True,
            "cache_params": {"type": "redis", "mode": "default_off"},
        },
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_proxy(
    env: dict[str, str], config: Path, port: int, log_dir: Path, *, wait: bool = True, **kw: Any
) -> Proc:
    proc = spawn(
        "proxy",
        [
            sys.executable,
            str(ROOT / "proxy" / "start.py"),
            "--config",
            str(config),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        proxy_env(env),
        log_dir,
        **kw,
    )
    if wait:
        # Generous: LiteLLM's import alone takes tens of seconds on a busy 2-core machine.
        proc.wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=300)
    return proc


def start_api(
    env: dict[str, str],
    port: int,
    log_dir: Path,
    name: str = "api",
    *,
    wait: bool = True,
    **kw: Any,
) -> Proc:
    proc = spawn(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        env,
        log_dir,
        **kw,
    )
    if wait:
        proc.wait_http(f"http://127.0.0.1:{port}/health", timeout=180)
    return proc


def start_worker(
    env: dict[str, str], log_dir: Path, name: str = "worker", *, wait: bool = True, **kw: Any
) -> Proc:
    proc = spawn(name, [str(BIN / "arq"), "worker.main.WorkerSettings"], env, log_dir, **kw)
    if wait:
        proc.wait_log("worker started", timeout=180)
    return proc


@dataclass
class Stack:
    """The running processes of one platform instance."""

    env: dict[str, str]
    api_url: str
    proxy_url: str
    log_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
