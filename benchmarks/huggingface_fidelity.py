"""Hugging Face models converted unedited, on shares in two real party processes (the
cases of tests/test_huggingface.py, which checks each against its fidelity): the worst
cosine to plain PyTorch of each output over every unmasked token, written to
docs/results/huggingface_fidelity.md.

    python benchmarks/huggingface_fidelity.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# the cases live with the tests; the party processes re-import this module, so the path
# is set here, at import
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402
from harness import run_parties  # noqa: E402
from hf_cases import ARCHITECTURES, build  # noqa: E402
from results_page import results_page  # noqa: E402
from test_huggingface import _on_shares  # noqa: E402


def main() -> int:
    names = sorted(ARCHITECTURES)
    cosines = run_parties(_on_shares, 2, names, timeout=900)[0]
    print("| architecture | inputs | outputs | worst cosine on shares |")
    print("| --- | --- | --- | --- |")
    for name in names:
        model, args, kwargs = build(name)
        with torch.no_grad():
            outputs = list(model(*args, **kwargs).keys())
        inputs = ["input_ids" if args[0].dtype == torch.long else "pixel_values", *kwargs]
        print(
            f"| `{name}` | {', '.join(f'`{i}`' for i in inputs)} | {', '.join(f'`{o}`' for o in outputs)} | "
            f"{', '.join(f'{c:.6f}' for c in cosines[name])} |"
        )
    return 0


if __name__ == "__main__":
    with results_page("huggingface_fidelity", fenced=False):
        code = main()
    sys.exit(code)
