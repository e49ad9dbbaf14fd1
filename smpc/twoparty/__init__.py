"""Two parties and no dealer: the correlated randomness made by the parties together.

link      the other party, as the offline phase talks to it (exchanges of bytes)
ot        base OTs (Chou-Orlandi, from otc) and their extension (IKNP/ALSZ)
ot_kernels the extension's bit transpose, compiled
triples   Beaver, square, AND triples and shared bits from the OTs (Gilboa's products)
he        sums of products in Z/2^64 by homomorphic encryption (SEAL's BFV, CRT, flooding)
packing   matrix products in Cheetah's coefficient packing (many multiply-adds a polynomial)
bilinear  every product a triple is for (elementwise, matrix, convolution) as sums of products
matrix_triples  triples of those products from the sums
provider  CrypTen's provider interface answered by the two parties together
"""

__all__ = ["bilinear", "he", "link", "matrix_triples", "ot", "ot_kernels", "packing", "provider", "triples"]
