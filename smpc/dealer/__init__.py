"""The trusted dealer: the correlated randomness and FSS keys the parties consume.

    server     the dealer process (`smpc dealer CONFIG`)
    provider   CrypTen's provider interface inside a party, and the dealer's tracing one
    material   what each party draws and what the dealer sends it, per request
"""
