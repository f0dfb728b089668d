"""`saas-llm up` from an empty folder: embedded PostgreSQL and Redis, the offline demo model, the
demo key; a job through the Python client; a clean stop; a second start that finds it all again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.models import DEMO_RESPONSE
from cli.stack import free_port
from saas_llm_client import APIError, AsyncClient, Client, request

SAAS_LLM = Path(sys.executable).parent / "saas-llm"
KEY_LINE = re.compile(r"^Demo key: (sk-\S+)$", re.M)
UNSET = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "LITELLM_MASTER_KEY",
    "ADMIN_API_KEY",
    "LITELLM_PROXY_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "SAAS_LLM_API_KEY",
    "SAAS_LLM_ADMIN_KEY",
)


class Up:
    """One `saas-llm up` process in `folder`, its output in a file (a pipe could fill up)."""

    def __init__(self, folder: Path, ports: dict[str, int], run: int) -> None:
        self.folder = folder
        self.ports = ports
        self.out = folder / f"up-{run}.out"
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        argv = [
            str(SAAS_LLM),
            "up",
            "--api-port",
            str(ports["api"]),
            "--proxy-port",
            str(ports["proxy"]),
            "--pg-port",
            str(ports["pg"]),
            "--redis-port",
            str(ports["redis"]),
        ]
        with self.out.open("wb") as out:
            self.popen = subprocess.Popen(
                argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.started = time.monotonic()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_key(self, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = KEY_LINE.search(self.text())
            if found:
                return found.group(1)
            if self.popen.poll() is not None:
                raise AssertionError(f"up exited {self.popen.returncode}:\n{self.text()}")
            time.sleep(0.1)
        raise AssertionError(f"no key printed in {timeout}s:\n{self.text()}")

    def children(self) -> list[int]:
        pids: list[int] = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.popen.pid:
                pids.append(int(stat.parent.name))
        return pids

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        self.popen.send_signal(sig)
        return self.popen.wait(timeout)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """Outside pytest's own temporary root, which pytest keeps at mode 0700 (and resets when
    another pytest session starts): the embedded PostgreSQL runs as another user and must be
    able to reach its data folder all along."""
    path = Path(tempfile.mkdtemp(prefix="saas-llm-first-run-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("api", "proxy", "pg", "redis")}


@pytest.fixture(scope="module")
def first(folder: Path, ports: dict[str, int]) -> Iterator[Up]:
    assert not any(folder.iterdir()), "the folder must start empty"
    up = Up(folder, ports, 1)
    yield up
    if up.popen.poll() is None:
        up.stop()


def test_first_start_prints_key_and_runs_a_demo_job(first: Up, folder: Path) -> None:
    key = first.wait_key()
    out = first.text()
    assert "saas-llm is up" in out
    assert f"curl -s {first.api_url}/api/jobs" in out and key in out
    assert "models: demo" in out  # no provider key in the environment: the demo model only
    state = folder / ".saas-llm" / "state.json"
    assert state.exists() and state.stat().st_mode & 0o077 == 0
    assert (folder / ".saas-llm" / "postgres" / "PG_VERSION").exists()
    assert (folder / ".saas-llm" / "redis" / "valkey.conf").exists()

    with Client(first.api_url, key) as client:
        assert client.models() == ["demo"]
        job = client.submit([request("demo", "Say hello", custom_id="hello")], job_type="first-run")
        assert job.status == "queued"
        done = client.wait(job.id, timeout=60)
        assert done.status == "succeeded", done.raw
        assert done.usage.total_tokens > 0 and done.usage.prompt_tokens > 0
        assert done.cost_usd > 0
        results = client.results(job.id)
        assert [r.custom_id for r in results] == ["hello"]
        assert results[0].content == DEMO_RESPONSE
        with pytest.raises(APIError) as missing:
            client.get("job_does_not_exist")
        assert missing.value.status == 404 and missing.value.type == "not_found"
        assert missing.value.request_id
    (folder / "job_id").write_text(job.id)


def test_first_start_prints_the_dashboard_owner_password_once_and_it_signs_in(
    first: Up, folder: Path
) -> None:
    first.wait_key()
    out = first.text()
    assert f"admin:  {first.api_url}/admin   sign in as owner@localhost" in out
    password = out.split("Dashboard password (shown once; also in ", 1)[1].split("): ", 1)[1]
    password = password.split()[0]
    state = json.loads((folder / ".saas-llm" / "state.json").read_text())
    assert state["admin_password"] == password and state["admin_email"] == "owner@localhost"
    with httpx.Client(base_url=first.api_url, timeout=30) as browser:
        login = browser.get("/admin/login").text
        token = login.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        signed = browser.post(
            "/admin/login",
            data={"email": "owner@localhost", "password": password, "csrf_token": token},
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/admin"
        assert browser.get("/admin/teams").status_code == 200


async def test_step_style_through_the_async_client(first: Up) -> None:
    key = first.wait_key()
    async with AsyncClient(first.api_url, key) as client:
        job = await client.create_job(job_type="steps", metadata={"n": 1})
        assert job.status == "open"
        call = await client.add_call(job.id, "demo", prompt="one", wait=30)
        assert call.status == "succeeded" and call.content == DEMO_RESPONSE
        assert call.usage is not None and call.usage.total_tokens > 0
        await client.complete(job.id)
        done = await client.wait(job.id, timeout=60)
        assert done.status == "succeeded" and done.request_counts.succeeded == 1
        assert done.cost_usd == call.cost_usd


def test_sigint_stops_everything_and_a_second_start_finds_the_data(
    first: Up, folder: Path, ports: dict[str, int]
) -> None:
    key = first.wait_key()
    job_id = (folder / "job_id").read_text()
    children = first.children()
    assert len(children) >= 5  # proxy, postgres, redis, api, worker
    assert first.stop(signal.SIGINT) == 0
    assert "stopped." in first.text()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in children if _alive(p)], "children left running after SIGINT"
    with pytest.raises(httpx.ConnectError):
        httpx.get(first.api_url + "/health", timeout=2)

    second = Up(folder, ports, 2)
    try:
        assert second.wait_key() == key  # same key, kept in the data folder
        assert "created a PostgreSQL cluster" not in second.text()
        assert "Dashboard password" not in second.text()  # printed on the first run only
        with Client(second.api_url, key) as client:
            job = client.get(job_id)
            assert job.status == "succeeded" and job.cost_usd > 0
            assert client.results(job_id)[0].content == DEMO_RESPONSE
        assert second.stop(signal.SIGTERM) == 0
    finally:
        if second.popen.poll() is None:
            second.popen.kill()


def test_a_second_up_on_the_same_folder_is_refused(folder: Path, ports: dict[str, int]) -> None:
    holder = Up(folder, ports, 3)
    try:
        holder.wait_key()
        other = {k: free_port() for k in ports}
        clash = Up(folder, other, 4)
        assert clash.popen.wait(180) != 0  # it refuses at once; the bound is for a busy machine
        assert "already uses" in clash.text()
    finally:
        holder.stop()
