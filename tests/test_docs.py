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
