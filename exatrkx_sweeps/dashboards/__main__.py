"""``python -m exatrkx_sweeps.dashboards STUDY``: a study's dashboard as an HTML page.

Reads the study's runs from MLflow and writes ``<out>/<STUDY>.html`` (default
``dashboards/html/``), which draws without network access.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import TrackingError, one_line
from . import build
from .runs import DashboardError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m exatrkx_sweeps.dashboards", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("study", help="the study's name (its study file's name, e.g. noise_robustness)")
    ap.add_argument("--tracking-uri", help="the MLflow store (default: as the runs, ~/.exatrkx/mlflow.db)")
    ap.add_argument("--experiment", default="exatrkx", help="the MLflow experiment (default: exatrkx)")
    ap.add_argument(
        "--out", default="dashboards/html", help="the folder of the pages (default: dashboards/html)"
    )
    ap.add_argument(
        "--plotlyjs",
        choices=("embed", "beside"),
        default="embed",
        help="plotly.js inside the page (default) or once beside the pages",
    )
    args = ap.parse_args(argv)
    try:
        path = build.write(args.study, args.out, args.tracking_uri, args.experiment, args.plotlyjs)
    except (DashboardError, TrackingError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    print(f"dashboard of study {args.study}: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
