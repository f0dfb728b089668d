"""Dashboard accounts for tests, made the way an operator makes them (`saas-llm admin create`)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from dataclasses import dataclass

import httpx

from cli.stack import ROOT, Stack


@dataclass(frozen=True)
class Account:
    email: str
    password: str


def create_account(stack: Stack, role: str) -> Account:
    account = Account(f"{role}-{uuid.uuid4().hex[:8]}@example.com", "pw-" + uuid.uuid4().hex)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "admin",
            "create",
            "--email",
            account.email,
            "--role",
            role,
            "--password-env",
            "--database-url",
            stack.env["DATABASE_URL"],
        ],
        env={**stack.env, "SAAS_LLM_ADMIN_PASSWORD": account.password},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"created {role} {account.email}" in done.stdout
    return account


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def http_sign_in(client: httpx.Client, account: Account) -> None:
    """Sign in over plain HTTP (no browser): the login form's token, then the post."""
    token = form_token(client.get("/admin/login").text)
    r = client.post(
        "/admin/login",
        data={"email": account.email, "password": account.password, "csrf_token": token},
    )
    assert r.status_code == 303, r.text
