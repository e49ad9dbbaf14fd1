"""Serving: the client API of a standing party (Open Inference Protocol v2 over mTLS),
the batching of concurrent queries, metrics, and the client SDK."""
