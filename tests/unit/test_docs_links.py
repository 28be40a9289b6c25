"""Every relative Markdown link in the project's documentation resolves: the
file exists and, for a `#anchor` into a Markdown file, a heading of that file
has that anchor under GitHub's slug rules. External http(s) links are not
fetched. No root needed.

Checked: README.md, ARCHITECTURE.md, harness/README.md, harness/docs/*.md and
docs/*.md. Headings and links inside fenced code blocks and inline code are
ignored, as GitHub renders them as code.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]


def doc_files(root: Path = ROOT) -> list[Path]:
    files = [root / "README.md", root / "ARCHITECTURE.md", root / "harness" / "README.md"]
    files += sorted((root / "harness" / "docs").glob("*.md"))
    files += sorted((root / "docs").glob("*.md"))
    return files


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](dest) and ![alt](dest), with an optional "title"; dest may be <...>
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]+)(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)\s*=\s*\"([^\"]+)\"", re.I)


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                    and not line.strip()[len(m.group(1)):].strip():
                fence = None
            continue
        yield no, line


def heading_text(raw: str) -> str:
    """The rendered text of a heading: code spans keep their content, links
    their text, emphasis markers go."""
    text = INLINE_CODE.sub(lambda m: m.group(2).strip(), raw)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)
    return text


def github_slug(text: str) -> str:
    """GitHub's heading anchor: lower case; every character that is not a
    letter, digit, space, '-' or '_' removed; each space becomes '-'."""
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        out.update(HTML_ANCHOR.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(heading_text(m.group(2)))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path):
    """(line number, destination) of every link in prose."""
    for no, line in prose_lines(path.read_text(encoding="utf-8")):
        m = REF_DEF.match(line)
        if m:
            yield no, m.group(1).strip("<>")
        stripped = INLINE_CODE.sub(lambda c: " " * len(c.group(0)), line)
        for m in INLINE_LINK.finditer(stripped):
            yield no, m.group(1).strip("<>")


EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    problems = []
    cache: dict[Path, set[str]] = {}
    for doc in files:
        for no, dest in links(doc):
            if EXTERNAL.match(dest):
                continue
            target, _, anchor = dest.partition("#")
            where = f"{doc.relative_to(root)}:{no}: {dest}"
            path = (doc.parent / unquote(target)).resolve() if target else doc
            if not path.exists():
                problems.append(f"{where}: no file {path}")
                continue
            if not anchor or path.suffix.lower() != ".md":
                continue
            if path not in cache:
                cache[path] = anchors(path)
            if unquote(anchor).lower() not in cache[path]:
                problems.append(f"{where}: no heading with anchor #{anchor} in "
                                f"{path.relative_to(root) if path.is_relative_to(root) else path}")
    return problems


def test_every_relative_link_in_the_docs_resolves():
    files = doc_files()
    assert all(f.exists() for f in files[:3])
    assert len(files) > 3, "docs/ and harness/docs/ hold Markdown pages"
    assert broken_links(files) == []


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


@pytest.mark.parametrize("heading, slug", [
    ("Function tracing (`funcs`)", "function-tracing-funcs"),
    ("Design: CO-RE + libbpf, not bcc", "design-co-re--libbpf-not-bcc"),
    ("Context propagation by injection (`--inject`)",
     "context-propagation-by-injection---inject"),
    ("Measured (this machine: 2 vCPU VM, Linux 6.18)",
     "measured-this-machine-2-vcpu-vm-linux-618"),
    ("`overload` and `soak` (`harness/overload.py`)", "overload-and-soak-harnessoverloadpy"),
    ("What gets counted (nothing is dropped silently)",
     "what-gets-counted-nothing-is-dropped-silently"),
    ("The **bold** [linked](x.md) snake_case", "the-bold-linked-snake_case"),
])
def test_slugs_follow_github(heading, slug):
    assert github_slug(heading_text(heading)) == slug


def test_broken_files_and_anchors_are_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# A\n\n## Same\n\n## Same\n\n```sh\n# not a heading\n[x](missing.md)\n```\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# T\n\n"
        "[ok](docs/a.md#same-1) [ok](#t) [ok](https://example.com/#nowhere)\n"
        "[no file](docs/b.md) `[in code](nope.md)`\n"
        "[no anchor](docs/a.md#same-2) ![no image](img/x.png)\n"
        "[no local anchor](#not-a-heading)\n")
    problems = broken_links([readme, tmp_path / "docs" / "a.md"], root=tmp_path)
    assert [p.split(": ")[1] for p in problems] == [
        "docs/b.md", "docs/a.md#same-2", "img/x.png", "#not-a-heading"]
