"""The `saas-llm` admin and team commands against the running test stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from cli.stack import Stack
from tests.conftest import nonce
from tests.harness import MASTER_KEY

SAAS_LLM = Path(sys.executable).parent / "saas-llm"


def run(
    capsys: pytest.CaptureFixture[str], stack: Stack, key: str, *argv: str
) -> tuple[int, str, str]:
    code = main([*argv, "--api-url", stack.api_url, "--key", key, "--data-dir", "/nonexistent"])
    out, err = capsys.readouterr()
    return code, out, err


def test_teams_and_keys_lifecycle(capsys: pytest.CaptureFixture[str], stack: Stack) -> None:
    team_id = "cli-" + nonce()
    code, out, _ = run(capsys, stack, MASTER_KEY, "teams", "create", team_id, "--name", "CLI team")
    assert code == 0 and json.loads(out)["team_id"] == team_id
    code, out, err = run(capsys, stack, MASTER_KEY, "teams", "create", team_id)
    assert code == 1 and "409 conflict" in err
    code, out, _ = run(capsys, stack, MASTER_KEY, "teams", "get", team_id)
    assert json.loads(out)["name"] == "CLI team"
    code, out, _ = run(capsys, stack, MASTER_KEY, "teams", "list", "--limit", "200")
    assert team_id in {t["team_id"] for t in json.loads(out)["data"]}

    code, out, err = run(capsys, stack, MASTER_KEY, "keys", "create", team_id, "--name", "ci")
    created = json.loads(out)
    assert code == 0 and created["key"].startswith("sk-") and "not shown again" in err
    code, out, _ = run(capsys, stack, created["key"], "jobs", "list")
    assert code == 0 and json.loads(out) == []

    code, out, _ = run(capsys, stack, MASTER_KEY, "teams", "suspend", team_id)
    assert json.loads(out)["status"] == "suspended"
    code, out, err = run(
        capsys, stack, created["key"], "jobs", "submit", "--model", "gpt-4o-mini", "--prompt", "hi"
    )
    assert code == 1 and "403" in err
    code, out, _ = run(capsys, stack, MASTER_KEY, "teams", "resume", team_id)
    assert json.loads(out)["status"] == "active"

    code, out, _ = run(capsys, stack, MASTER_KEY, "keys", "list", team_id)
    assert [k["id"] for k in json.loads(out)["data"]] == [created["id"]]
    code, out, _ = run(capsys, stack, MASTER_KEY, "keys", "revoke", team_id, created["id"])
    assert json.loads(out)["revoked_at"]
    code, out, err = run(capsys, stack, created["key"], "jobs", "list")
    assert code == 1 and "401" in err

    code, out, err = run(capsys, stack, "sk-wrong-admin-key-0000", "teams", "list")
    assert code == 1 and "401" in err


def test_jobs_submit_wait_get_and_results(
    capsys: pytest.CaptureFixture[str], stack: Stack, make_team, tmp_path: Path
) -> None:
    team = make_team()
    tag = nonce()
    code, out, err = run(
        capsys,
        stack,
        team.key,
        "jobs",
        "submit",
        "--model",
        "gpt-4o-mini",
        "--prompt",
        f"{tag} hello",
        "--wait",
        "--job-type",
        "cli",
    )
    job = json.loads(out)
    assert code == 0 and job["status"] == "succeeded" and job["job_type"] == "cli"
    assert f"submitted job {job['id']} (1 calls)" in err
    bars = [line for line in err.splitlines() if line.startswith("[")]
    assert bars[-1].startswith("[" + "#" * 30 + "] 1/1 calls done") and "succeeded" in bars[-1]

    requests = tmp_path / "requests.jsonl"
    lines = [
        {
            "custom_id": "b",
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"{tag} b"}],
        },
        # an OpenAI Batch input line works too
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} a"}]},
        },
    ]
    requests.write_text("# two requests\n" + "\n".join(json.dumps(x) for x in lines) + "\n\n")
    code, out, err = run(capsys, stack, team.key, "jobs", "submit", "-f", str(requests), "--wait")
    job = json.loads(out)
    assert code == 0 and job["request_counts"]["succeeded"] == 2
    assert "2/2 calls done" in err

    code, out, _ = run(capsys, stack, team.key, "jobs", "get", job["id"], "--calls")
    assert sorted(c["custom_id"] for c in json.loads(out)["calls"]) == ["a", "b"]
    code, out, _ = run(capsys, stack, team.key, "jobs", "results", job["id"])
    assert [r["custom_id"] for r in json.loads(out)] == ["a", "b"]
    code, out, _ = run(capsys, stack, team.key, "jobs", "results", job["id"], "--format", "jsonl")
    parsed = [json.loads(line) for line in out.splitlines()]
    assert [p["custom_id"] for p in parsed] == ["a", "b"]
    assert parsed[0]["response"]["body"]["choices"][0]["message"]["content"] == f"echo: {tag} a"
    code, out, err = run(capsys, stack, team.key, "jobs", "get", "job_missing")
    assert code == 1 and "404 not_found" in err and "request req_" in err


def test_console_script_and_env_variables(stack: Stack, make_team) -> None:
    team = make_team()
    env = {"PATH": "/usr/bin:/bin", "SAAS_LLM_API_URL": stack.api_url, "SAAS_LLM_API_KEY": team.key}
    done = subprocess.run(
        [str(SAAS_LLM), "jobs", "submit", "--model", "gpt-4o-mini", "--prompt", "x", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert "1/1 calls done" in done.stderr
    missing = subprocess.run(
        [str(SAAS_LLM), "teams", "list", "--data-dir", "/nonexistent"],
        env={**env, "SAAS_LLM_API_KEY": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode != 0 and "no admin key" in missing.stderr


def test_client_imports_without_server_dependencies() -> None:
    blocked = [
        "fastapi",
        "sqlalchemy",
        "pydantic",
        "arq",
        "redis",
        "litellm",
        "yaml",
        "asyncpg",
        "alembic",
        "shared",
        "api",
        "cli",
    ]
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import saas_llm_client as c\n"
        "print(c.Client.__name__, c.AsyncClient.__name__, c.APIError.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Client", "AsyncClient", "APIError"]
