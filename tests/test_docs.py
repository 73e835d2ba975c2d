"""The physics reference the docstrings cite lives in the repository, with the cited sections."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cited_physics_sections_exist():
    page = (ROOT / "docs" / "physics.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", page, flags=re.M)}
    cited = set()
    for path in [*(ROOT / "exatrkx_sweeps").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]:
        text = path.read_text()
        assert "PHYSICS.md" not in text, f"{path}: cite docs/physics.md, the page in this repository"
        for first, last in re.findall(r"docs/physics\.md sections? (\d+)(?:-(\d+))?", text):
            cited.update(range(int(first), int(last or first) + 1))
    assert cited and cited <= sections, sorted(cited - sections)


DOCS = {"README": ROOT / "README.md", "docs/pu200.md": ROOT / "docs" / "pu200.md"}


def _leads(page: str) -> list[str]:
    """The bold text that opens each paragraph of ``page`` (its leads), in order."""
    paragraphs = re.split(r"\n\s*\n", page)
    return [m.group(1) for p in paragraphs if (m := re.match(r"\*\*(.+?)\*\*", p, flags=re.S))]


def test_cited_sections_and_paragraphs_exist():
    """A citation such as (docs/pu200.md, "Which CPU") or (README, "Track building") in the
    code, the configs or the pages names a heading or a paragraph's bold lead that is there:
    moving a measurement between pages cannot leave a citation pointing at nothing."""
    pages = {name: " ".join(path.read_text().split()) for name, path in DOCS.items()}
    leads = {
        name: [" ".join(lead.split()) for lead in _leads(path.read_text())] for name, path in DOCS.items()
    }
    sources = [
        *ROOT.joinpath("exatrkx_sweeps").rglob("*.py"),
        *ROOT.joinpath("exatrkx_sweeps").rglob("*.yaml"),
    ]
    sources += [
        *ROOT.joinpath("benchmarks").rglob("*.py"),
        *ROOT.joinpath("tests").rglob("*.py"),
        *DOCS.values(),
    ]
    cited = 0
    for path in sources:
        text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text())  # one line, comment marks out
        for doc, title in re.findall(r"\b(README|docs/pu200\.md),? \"([^\"]+)\"", text):
            cited += 1
            heading = re.search(r"(?:^|\s)#{2,4} " + re.escape(title), pages[doc])
            lead = any(lead.startswith(title) for lead in leads[doc])
            assert heading or lead, f'{path.relative_to(ROOT)}: {doc} has no section or paragraph "{title}"'
    assert cited >= 10


def test_the_study_log_lists_its_paragraphs():
    """docs/pu200.md opens with the list of its paragraphs' leads, in order."""
    page = DOCS["docs/pu200.md"].read_text()
    listed = re.search(r"Paragraphs, in order:\n\n((?:- .*\n)+)", page).group(1)
    listed = [line[2:] for line in listed.splitlines()]
    leads = [" ".join(lead.split()).rstrip(" .:") for lead in _leads(page)]
    assert listed == leads
