"""What a product with a fixed operand costs locally (smpc.protocols.ring_matmul): x @ W
in Z/2^64 in each of the three exact forms (torch's int64 matmul, int8 digits, 16-bit
limbs in float64), on one thread, for the shapes of the MiniLM-size encoder and BERT-base
(a lookup of one sentence's one-hot ids in the 30,522-word table, the layers' weights),
from one run, and the form this process picked (`fastest_form`, on a smaller probe).

Each product is timed five times after one warm-up; the medians are printed, with the
ratios to int64.

    python benchmarks/ring_matmul.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from results_page import results_page
from smpc.protocols import ring_matmul
from smpc.protocols.csprng import AesCtrGenerator

# name, rows of x (tokens), W's shape
SHAPES = [
    ("MiniLM lookup, 16 tokens", 16, (30522, 384)),
    ("MiniLM FFN in, 16 tokens", 16, (384, 1536)),
    ("MiniLM FFN out, 16 tokens", 16, (1536, 384)),
    ("BERT-base lookup, 128 tokens", 128, (30522, 768)),
    ("BERT-base FFN in, 128 tokens", 128, (768, 3072)),
]


def median_ms(run: Callable[[], object], repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def main() -> int:
    torch.set_num_threads(1)
    forms = [name for name in ring_matmul.FORMS if name != "digits" or ring_matmul.int8_exact()]
    generator = AesCtrGenerator(bytes(32))
    print(f"this process's form: {ring_matmul.fastest_form()}; int8 GEMMs exact here: {ring_matmul.int8_exact()}")
    header = "".join(f" {name + ' ms':>10}" for name in forms) + "".join(
        f" {name + '/int64':>12}" for name in forms[1:]
    )
    print(f"{'product':>30}{header}")
    for name, rows, shape in SHAPES:
        x, w = generator.ring((rows, shape[0])), generator.ring(shape)
        fixed = {form: ring_matmul.FixedMatrix(w, form) for form in forms}
        results = [fixed[form].rmatmul(x) for form in forms]
        if not all(torch.equal(results[0], other) for other in results[1:]):
            print(f"{name}: the forms disagree")
            return 1
        ms = [median_ms(lambda form=form, x=x, fixed=fixed: fixed[form].rmatmul(x)) for form in forms]
        ratios = "".join(f" {value / ms[0]:12.2f}" for value in ms[1:])
        print(f"{name:>30}" + "".join(f" {value:10.1f}" for value in ms) + ratios)
    return 0


if __name__ == "__main__":
    with results_page("ring_matmul"):
        code = main()
    sys.exit(code)
