"""What smpc computes on shares beyond CrypTen's own arithmetic, and which protocols run.

switches     which comparison and truncation protocols CrypTen's tensors run
approx       approximations of the non-linear functions on the ranges real models produce
tables, fit  their piecewise-polynomial tables, and how they are fitted
fss, dcf     one-round comparisons from function secret sharing (and the DCF's kernels)
fixed        products with a fixed operand (weights paid for once)
ring_matmul  exact products in Z/2^64
lookup       lookups on secret ids
top_k        the top-k revealed to the output parties
range_check  the in-protocol range checks
csprng       the secure generator every mask comes from
"""

__all__ = [
    "approx",
    "csprng",
    "dcf",
    "dcf_kernels",
    "fit",
    "fixed",
    "fss",
    "lookup",
    "range_check",
    "ring_matmul",
    "switches",
    "tables",
    "top_k",
]
