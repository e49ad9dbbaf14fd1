"""Serving: the client API of a standing party (Open Inference Protocol v2 over mTLS),
the batching of concurrent queries, metrics, and the client SDK.

    api         the party's HTTP API (Starlette on uvicorn)
    batching    how concurrent queries become batches all parties agree on
    queries     the queries waiting and answered (QueryBook)
    metrics     Prometheus metrics
    model_info  what a client is told about the model (inputs, tokenizer, protocol)
    shares      a client's input split into shares, and answers put back together
    client      the client SDK (smpc.Client)
    query       `smpc query`: many queries from a data or text file, and their report
"""

__all__ = ["api", "batching", "client", "metrics", "model_info", "queries", "query", "shares"]
