"""The worst error of every approximation of smpc.protocols.approx over the whole range
it covers, on shares in two real party processes (the sweeps of tests/test_approx.py,
which checks each against its tolerance): the range table of the docs, written to
docs/results/approximations.md.

    python benchmarks/approximations.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# the sweeps live with the tests; the party processes re-import this module, so the path
# is set here, at import
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from approx_cases import SWEEPS  # noqa: E402
from harness import run_parties  # noqa: E402
from results_page import results_page  # noqa: E402
from test_approx import _evaluate, worst_errors  # noqa: E402

RANGES = {
    "layer_norm": "row variance 1e-4 .. 1e6",
    "rms_norm": "row mean square 1e-4 .. 1e6",
    "layer_norm eps 0.1": "row variance 1e-4 .. 1e6",
    "layer_norm small variance": "row variance 4e-6 .. 1e-4",
    "softmax": "scores × 0.1 .. 20, rows masked with -1e4",
    "layer_norm weighted": "row variance 1e-4 .. 1e6, weight -2 .. 3",
    "rms_norm weighted": "row mean square 1e-4 .. 1e6, weight -2 .. 3",
}


def main() -> int:
    found = worst_errors(run_parties(_evaluate, 2, timeout=600)[0])
    ranges = {name: spec[4] for name, spec in SWEEPS.items()} | RANGES
    print("| function | input range swept | worst error |")
    print("|---|---|---|")
    for name, err in found.items():
        kind = SWEEPS[name][2] if name in SWEEPS else "absolute"
        print(f"| {name} | {ranges[name]} | {err:.1e} ({kind}) |")
    return 0


if __name__ == "__main__":
    with results_page("approximations", fenced=False):
        code = main()
    sys.exit(code)
