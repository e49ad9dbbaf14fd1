"""The demos' own output, as the docs show it: `make demo`, the demo's cost profile and
`make text-demo`, each run once, their console output written to docs/results/demo.md,
demo-profile.md and text-demo.md.

    python benchmarks/demos.py [--only demo|demo-profile|text-demo]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from results_page import results_page

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMOS = {
    "demo": [str(BIN / "smpc"), "launch", "configs/local-2pc.yaml", "--report", "runs/demo-report.json"],
    "demo-profile": [str(BIN / "smpc"), "launch", "configs/local-2pc.yaml", "--profile", "--quiet"],
    "text-demo": [sys.executable, "models/text_demo.py"],
}


def run(argv: list[str]) -> int:
    # the launcher relays each party's lines as they come: keep stdout and stderr in order
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    print(done.stdout, end="")
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DEMOS))
    args = parser.parse_args()
    for name, argv in DEMOS.items():
        if args.only not in (None, name):
            continue
        with results_page(name):
            print("$ " + " ".join(["smpc" if argv[0].endswith("smpc") else "python", *argv[1:]]))
            code = run(argv)
            if code != 0:  # inside the page's block: a failed demo leaves the last good page
                print(f"{name} failed with exit code {code}", file=sys.stderr)
                raise SystemExit(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
