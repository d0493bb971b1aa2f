"""The library, the tests and the reproduce scripts pass pyflakes and the 120-character line length (ruff, with the
rules in pyproject.toml). ``bench/`` is left out: its GPU suite deletes a closure's variable on purpose, which
pyflakes reads as an undefined name."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("encnet", "tests", "reproduce")


def ruff(*paths: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(REPO / "pyproject.toml")]
    return subprocess.run([*command, *map(str, paths)], cwd=REPO, capture_output=True, text=True)


def test_the_code_passes_pyflakes_and_the_line_length():
    result = ruff(*CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_reports_an_undefined_name_and_a_long_line(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(f"value = undefined_name\n# {'x' * 119}\n")
    result = ruff(planted)
    assert result.returncode == 1
    assert "F821" in result.stdout and "E501" in result.stdout
