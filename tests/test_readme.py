"""README's quick start and CI stay in step: CI runs exactly README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.startswith("python3 -m venv")]
    assert len(ci_lines) == 1
    assert ci_lines[0] in readme
    assert "pytest" in ci_lines[0]
