"""The import contracts in pyproject.toml hold, and `lint-imports` really fails when one breaks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "worker", "shared", "cli", "saas_llm_client")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(cwd), NO_COLOR="1")
    result = subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    result.stdout = ANSI.sub("", result.stdout)
    return result


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("shared/ids.py", "import api.deps", "shared imports neither api nor worker"),
        ("api/errors.py", "import worker.main", "api and worker never import each other"),
        ("shared/webhooks/repository.py", "import shared.jobs.lifecycle", "webhooks know nothing"),
        ("shared/jobs/views.py", "import arq.worker", "arq only behind shared.queue"),
    ],
)
def test_a_violating_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), result.stdout
