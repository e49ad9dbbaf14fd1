"""The ready studies of configs/studies/ as results pages of the docs: each study is
measured with `smpc bench` (real party processes, a warm-up and at least 3 runs per
cell), and its report's tables and plots become docs/results/study-NAME.md (and
docs/results/study-NAME/*.png), which the studies guide includes.

    python benchmarks/studies.py quick comparisons [precision ...]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from results_page import RESULTS, results_page

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "configs" / "studies"


def page_body(report: str, name: str) -> str:
    """The report without its title and its per-layer blocks (the study's own folder
    keeps those), headings one level down, plots pointing at the copies beside the page."""
    body = report.split("\n", 1)[1]  # the "# Study: NAME" title: the guide has its own heading
    body = body.split("\n## Communication per layer and op", 1)[0] + (
        "\n## Plots" + body.split("\n## Plots", 1)[1] if "\n## Plots" in body else ""
    )
    body = re.sub(r"(?m)^## ", "#### ", body)
    return re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", rf"![\1](study-{name}/\2)", body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", choices=sorted(p.stem for p in STUDIES.glob("*.yaml")))
    args = parser.parse_args()
    smpc = str(Path(sys.executable).parent / "smpc")
    for name in args.studies:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / name
            done = subprocess.run(
                [smpc, "bench", str(STUDIES / f"{name}.yaml"), "--out", str(out), "--no-progress"], cwd=ROOT
            )
            if done.returncode != 0:  # the last good page stays
                print(f"study {name} failed (exit {done.returncode}); its page is unchanged", file=sys.stderr)
                return done.returncode
            pictures = RESULTS / f"study-{name}"
            shutil.rmtree(pictures, ignore_errors=True)
            pictures.mkdir(parents=True)
            for png in out.glob("*.png"):
                shutil.copy(png, pictures / png.name)
            with results_page(f"study-{name}", fenced=False):
                print(page_body((out / "report.md").read_text(), name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
