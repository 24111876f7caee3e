"""The tracked text describes the project, not how it was developed; the README's commands exist.

Findings are stated with the commit they were measured at, never as a chronology of work periods.
pytest's fixture scope and subprocess's process-group option are the only uses of the word allowed.
"""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NARRATION = re.compile(
    r"\bsessions?\b"                                                        # work periods
    r"|\b(fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth)\b"  # ... and their ordinals
    r"|\blead engineer\b|\b(yesterday|last week|this week)\b",
    re.IGNORECASE,
)
ALLOWED = re.compile(r"""scope\s*=\s*["']session["']|start_new_session""")


def narration(text: str) -> list[str]:
    """The lines of ``text`` that narrate the work, as ``line number: line``."""
    return [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
            if NARRATION.search(ALLOWED.sub("", line))]


def test_the_check_finds_narration_and_allows_pytest_and_subprocess_words():
    word = "sess" + "ion"  # spelt apart, so that this file holds no narration itself
    assert narration(f"x\nthe eighth {word}'s cpu benchmark\n")[0].startswith("2:")
    assert narration("as the Fifth run showed") and narration(f"until the last {word.title()}")
    assert narration("the lead engineer merges it")
    assert not narration('@pytest.fixture(scope="session")\nPopen(cmd, start_new_session=True)')
    assert not narration("the first conv's channels; the second sub-step's reward; a third of an update")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.splitlines():
        path = REPO / name
        if path.is_file() and path.resolve() != Path(__file__).resolve():
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary
            files.append(path)
    return files


def test_no_tracked_text_narrates_how_the_project_was_developed():
    files = _tracked_text_files()
    assert any(p.name == "README.md" for p in files)
    found = {str(p.relative_to(REPO)): hits for p in files if (hits := narration(p.read_text(encoding="utf-8")))}
    assert not found, "narration of the work (state findings with their commit instead):\n" + "\n".join(
        f"{name}:{hit}" for name, hits in found.items() for hit in hits)


def _readme_redraw_commands() -> list[list[str]]:
    """`redraw WORDS...` of the README's code blocks, up to the first argument that is not a command."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    commands = []
    for line in "\n".join(blocks).splitlines():
        line = line.split("#")[0]
        if ".venv/bin/redraw " in line:
            commands.append(shlex.split(line.split(".venv/bin/redraw ", 1)[1]))
    return commands


def test_readme_redraw_commands_parse():
    from redraw.cli import build_parser

    commands = _readme_redraw_commands()
    assert len(commands) >= 8
    for words in commands:
        words = [w for w in words if w != "--help"]
        try:
            build_parser().parse_args(words)
        except SystemExit as exc:
            pytest.fail(f"README: `redraw {' '.join(words)}` does not parse (exit {exc.code})")
