"""The trusted dealer: the correlated randomness and FSS keys the parties consume.

server     the dealer process (`smpc dealer CONFIG`): check-in, offline trace, the streams
client     what a party uses: DealerClient (check in, read material, leave)
streams    a party's reading side: a run's MaterialStream, a service's MaterialPool
provider   CrypTen's provider interface inside a party (PartyProvider)
trace      the dealer's shape-only run and its TracingProvider
material   what each party draws and what the dealer sends it, and the tags binding it
messages   one typed schema per message kind
states     the protocol's states without I/O (RollCall, StreamState)
"""

__all__ = ["client", "material", "messages", "provider", "server", "states", "streams", "trace"]
