"""The tracked text describes the project, not how it was developed; the README's commands exist.

Findings are stated as what was measured, never as a chronology of work periods; the numbers the
reports quote from a result file are that file's (``<!-- from FILE: PATH -->`` after the number),
and the commit and settings behind them live in that file, not in the prose.
pytest's fixture scope and subprocess's process-group option are the only uses of the word allowed.
"""

import json
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
    assert not found, "narration of the work (state what was measured, and where it is recorded):\n" + "\n".join(
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


# -- numbers the reports quote, against the result files they come from ------------------------------
#: a number, then ``<!-- from FILE: PATH -->``: FILE a JSON file (from the repository's root), PATH the
#: value in it, keys and list indices joined by dots, ``[key=value, ...]`` the one element of a list
#: with those fields, ``mean``/``min``/``max`` of a list of numbers: ``122.2<!-- from
#: benchmarks/results/transfer_quality.json: records[seed=1, method=redraw].return_mean -->``.
#: The quoted number must be the value rounded to its digits.
MARKER = re.compile(r"<!--\s*from\s+(?P<file>[^\s:]+):\s*(?P<path>.*?)\s*-->")
#: the number a marker follows (bold allowed); a hyphen after a digit is a range's, not a sign
NUMBER = re.compile(r"(?:(?<![\w.])[−-])?(?<![\d.,])\d[\d,]*(?:\.\d+)?(?=\**\s*$)")
#: the reports organised by question; the first two quote result files
REPORTS = ("investigations.md", "residual.md", "performance.md")
#: what a PATH may take of a list of numbers
REDUCE = {"mean": lambda xs: sum(xs) / len(xs), "min": min, "max": max}
#: a commit hash: 7-40 hex digits with at least one letter and one digit
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")


def lookup(data, path: str):
    """The value at ``path`` (see MARKER) in ``data``."""
    for part in re.findall(r"\[[^\]]*\]|[^.\[\]]+", path):
        if part.startswith("["):
            fields = {k.strip(): v.strip() for k, _, v in (f.partition("=") for f in part[1:-1].split(","))}
            found = [x for x in data if isinstance(x, dict) and all(str(x.get(k)) == v for k, v in fields.items())]
            if len(found) != 1:
                raise LookupError(f"{part} matches {len(found)} elements, not one")
            data = found[0]
        elif isinstance(data, list):
            data = REDUCE[part](data) if part in REDUCE else data[int(part)]
        else:
            data = data[part.strip()]
    return data


def misquoted(markdown: str, root: Path = REPO) -> list[str]:
    """The marked numbers of ``markdown`` that are not their result file's value, each with why
    (a marker in code, which shows the convention, is not one)."""
    def blank(m):
        return " " * len(m[0])

    wrong, markdown = [], INLINE_CODE.sub(blank, FENCE.sub(blank, markdown))
    for m in MARKER.finditer(markdown):
        where = f"{m['file']}: {m['path']}"
        if not (number := NUMBER.search(markdown, max(0, m.start() - 40), m.start())):
            wrong.append(f"no number before the marker of {where}")
            continue
        quoted = number[0].replace("−", "-").replace(",", "")
        try:
            value = lookup(json.loads((root / m["file"]).read_text(encoding="utf-8")), m["path"])
        except (OSError, ValueError, LookupError, TypeError) as exc:
            wrong.append(f"{number[0]}: {where}: {exc!r}")
            continue
        half_digit = 0.5 * 10 ** -len(quoted.partition(".")[2])
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or abs(value - float(quoted)) > half_digit + 1e-9:
            wrong.append(f"{number[0]}: {where} is {value!r}")
    return wrong


def test_the_number_check_reads_the_value_and_fails_on_a_wrong_one(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"records": [
        {"seed": 1, "method": "redraw", "variant": "bc_weight=1.0", "return_mean": 122.2,
         "curve": [[1000, 69.8], [2000, -6.84]], "kl": [1.0, 2.0, 4.5]},
        {"seed": 2, "method": "redraw", "variant": "bc_weight=1.0", "return_mean": 41.23}]}))

    def check(text):
        return misquoted(text, root=tmp_path)

    seed1 = "<!-- from r.json: records[seed=1, method=redraw]"
    seed2 = "<!-- from r.json: records[seed=2]"
    assert check(f"ReDRAW **122.2**{seed1}.return_mean --> and 41.2{seed2}.return_mean -->") == []
    assert check(f"| 122 {seed1}.return_mean --> | −6.8{seed1}.curve.1.1 --> |") == []
    assert check(f"2.5{seed1}.kl.mean --> and 4.5{seed1}.kl.max -->") == [] and check(f"2.4{seed1}.kl.mean -->")
    assert check("41.2<!-- from r.json: records[variant=bc_weight=1.0, seed=2].return_mean -->") == []
    assert check(f"123.2{seed1}.return_mean -->") == [
        "123.2: r.json: records[seed=1, method=redraw].return_mean is 122.2"]
    assert check(f"122.3{seed1}.return_mean -->") and check(f"6.8{seed1}.curve.1.1 -->")  # a digit, a sign
    assert check(f"from 6.9-122.2{seed1}.return_mean -->") == [] and check(f"ReDRAW {seed1}.return_mean -->")
    assert check(f"a marker shown as code, `1{seed1}.return_mean -->`, is none") == []
    assert "2 elements" in check("1<!-- from r.json: records[method=redraw].return_mean -->")[0]
    assert check(f"1{seed1}.nothing -->") and check(f"1{seed1}.method -->") and check("1<!-- from gone.json: a -->")


def test_the_numbers_the_docs_quote_are_the_result_files_values():
    documents = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    wrong = [f"{doc.relative_to(REPO)}: {why}"
             for doc in documents for why in misquoted(doc.read_text(encoding="utf-8"))]
    assert not wrong, "numbers that are not their result file's:\n" + "\n".join(wrong)
    for name in REPORTS[:2]:
        assert len(MARKER.findall((REPO / "docs" / name).read_text(encoding="utf-8"))) >= 20, name


def test_the_reports_leave_provenance_to_the_result_files():
    assert COMMIT.search("measured at 9b1c2d3e") and not COMMIT.search("the 1,024 rows; 5e-7; bf16; defaced")
    found = [f"{name}:{n}: {hit}" for name in REPORTS
             for n, line in enumerate((REPO / "docs" / name).read_text(encoding="utf-8").splitlines(), 1)
             for hit in COMMIT.findall(line)]
    assert not found, "commit hashes in the reports' prose (they belong in the result files):\n" + "\n".join(found)
