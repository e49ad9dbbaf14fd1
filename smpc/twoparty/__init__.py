"""Two parties and no dealer: the correlated randomness made by the parties together.

link      the other party, as the offline phase talks to it (exchanges of bytes)
ot        base OTs (Chou-Orlandi, from otc) and their extension (IKNP/ALSZ)
triples   Beaver, square, AND triples and shared bits from the OTs (Gilboa's products)
"""

__all__ = ["link", "ot", "triples"]
