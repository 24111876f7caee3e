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


# -- links between the documents -------------------------------------------------------------------
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+[\"'(].*)?$", re.MULTILINE)
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
#: documents whose citations in code (comments, docstrings, params) the check below follows
CITATION = re.compile(r"\b(docs/[\w./-]+\.md)(?:#([\w-]+))?")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its rendered text lower-cased, punctuation dropped, spaces
    to hyphens (``## 1.3 The `scale`: why`` -> ``13-the-scale-why``)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower().replace("*", ""))
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor a document offers: its headings' slugs (a repeated one numbered -1, -2, ...
    as GitHub does) and explicit ``<a name=...>`` / ``<a id=...>``."""
    found, seen = set(HTML_ANCHOR.findall(markdown)), {}
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(markdown: str) -> list[str]:
    """The link targets of a document outside code: inline, image and reference-style links."""
    text = INLINE_CODE.sub("", FENCE.sub("", markdown))
    return LINK.findall(text) + REFERENCE.findall(text)


def broken_link(source: Path, target: str) -> str | None:
    """Why ``target``, a link in ``source``, does not resolve (None where it does or is external)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
        return None  # http(s), mailto, ...: not checked here
    path, _, anchor = target.partition("#")
    file = (source.parent / path).resolve() if path else source
    if not file.exists():
        return f"{target}: no file {file.relative_to(REPO) if file.is_relative_to(REPO) else file}"
    if anchor and file.suffix == ".md" and anchor.lower() not in anchors(file.read_text(encoding="utf-8")):
        return f"{target}: no heading #{anchor} in {file.relative_to(REPO)}"
    return None


def test_the_link_check_follows_github():
    assert slug("1.3 Cause: the scale of the proprio inputs") == "13-cause-the-scale-of-the-proprio-inputs"
    assert slug("Keeping the policy near the data: behaviour cloning (beyond the paper)") == (
        "keeping-the-policy-near-the-data-behaviour-cloning-beyond-the-paper")
    assert slug("`redraw_pessimistic` and [the residual](x.md)") == "redraw_pessimistic-and-the-residual"
    doc = "# A\n## A\n```\n# not a heading\n[no](missing.md)\n```\nsee `[no](missing.md)` and [yes](b.md#x)\n[r]: c.md\n"
    assert anchors(doc) == {"a", "a-1"}
    assert links(doc) == ["b.md#x", "c.md"]
    assert broken_link(REPO / "docs" / "x.md", "pipeline.md") is None
    assert broken_link(REPO / "docs" / "x.md", "docs/pipeline.md").startswith("docs/pipeline.md: no file")
    assert "no heading #nowhere" in broken_link(REPO / "docs" / "x.md", "pipeline.md#nowhere")
    assert broken_link(REPO / "docs" / "x.md", "https://example.org/#x") is None


def test_every_relative_link_of_the_docs_resolves_to_a_file_and_heading():
    documents = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = [f"{doc.relative_to(REPO)}: {why}" for doc in documents
              for target in links(doc.read_text(encoding="utf-8")) if (why := broken_link(doc, target))]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_citation_of_a_document_in_the_code_names_an_existing_file_and_heading():
    files = [p for p in _tracked_text_files() if p.suffix in {".py", ".yaml", ".yml", ".toml", ".cfg"}]
    broken = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for doc, anchor in CITATION.findall(line):
                why = broken_link(REPO / "x", doc + (f"#{anchor}" if anchor else ""))
                if why:
                    broken.append(f"{path.relative_to(REPO)}:{n}: {why}")
    assert not broken, "citations of missing documents or headings:\n" + "\n".join(broken)
