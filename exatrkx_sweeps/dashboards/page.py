"""HTML pages of Plotly figures that work offline.

Every page this project writes (dashboards, a run's plots, a study parent's page) goes
through :func:`write`: plotly.js is embedded in the page (``plotlyjs="embed"``, one
self-contained file, what MLflow's artifact viewer needs) or written once beside the
pages and referenced relatively (``"beside"``); never loaded from a CDN, since cluster
nodes and this project's CI have no internet.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

PLOTLY_FILE = "plotly.min.js"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
th { background: #f3f3f3; } .note { color: #555; font-size: 0.9em; } code { background: #f3f3f3; }
"""


def table(rows: Sequence[Sequence[object]], head: Sequence[str] | None = None) -> str:
    """An HTML table of plain values (escaped)."""
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render(title: str, intro: str, sections: Sequence[tuple[str, go.Figure]], plotlyjs: str = "embed") -> str:
    """The page: a title, ``intro`` (HTML), then each figure under its heading."""
    if plotlyjs not in ("embed", "beside"):
        raise ValueError(f"plotlyjs must be 'embed' or 'beside', got {plotlyjs!r}.")
    script = (
        f"<script>{get_plotlyjs()}</script>"
        if plotlyjs == "embed"
        else f'<script src="{PLOTLY_FILE}"></script>'
    )
    body = []
    for i, (heading, fig) in enumerate(sections):
        fig.update_layout(margin=dict(t=50 if fig.layout.title.text else 20, b=40))
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{i}")
        body.append(f"<h2>{html.escape(heading)}</h2>\n{div}")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>{script}</head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n{intro}\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write(
    path: str | Path,
    title: str,
    intro: str,
    sections: Sequence[tuple[str, go.Figure]],
    plotlyjs: str = "embed",
) -> Path:
    """Write the page to ``path`` (and plotly.js beside it, once, with ``"beside"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plotlyjs == "beside" and not (path.parent / PLOTLY_FILE).exists():
        (path.parent / PLOTLY_FILE).write_text(get_plotlyjs(), encoding="utf-8")
    path.write_text(render(title, intro, sections, plotlyjs), encoding="utf-8")
    return path
