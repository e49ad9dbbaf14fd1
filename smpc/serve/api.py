"""A serving party's client API: KServe's Open Inference Protocol v2 over mutual TLS.

Routes (JSON; errors are OIP's ``{"error": "..."}`` with a fitting status):

    GET  /v2/health/live              the process is up
    GET  /v2/health/ready             every party has joined and the model is shared
    GET  /v2/models/{name}            metadata: the input and output tensors, the ring
    GET  /v2/models/{name}/ready
    GET  /v2/models/{name}/tokenizer  a text model's tokenizer.json (public)
    POST /v2/models/{name}/infer      the tensors are the client's *shares*, one per model
                                      input (INT64 ring elements); the answer is this
                                      party's share of each output
    GET  /metrics                     Prometheus text

Served by uvicorn (starlette routes) with a TLS context that requires a client
certificate from the consortium CA: a client without one is refused in the handshake.
Which identity may query the model is the config's `serving.clients`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from typing import Any
from collections.abc import Callable

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from smpc.errors import PartyError
from smpc.serve.metrics import ServiceMetrics
from smpc.serve.model_info import HEADER_LENGTH, ModelInfo
from smpc.serve.queries import Query, QueryBook, QueryFailed

MAX_ID_CHARS = 128
CLIENT_KEY = "smpc.client"  # the scope key holding the verified certificate's common name


class _IdentifiedH11(H11Protocol):
    """uvicorn's h11 protocol, putting the verified client certificate's common name in
    every request's scope. uvicorn 0.54 verifies client certificates but does not pass
    them to the application (the ASGI TLS extension is not implemented there yet)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        name = next((v for rdn in (cert or {}).get("subject", ()) for k, v in rdn if k == "commonName"), None)
        app = self.app

        async def with_identity(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
            scope[CLIENT_KEY] = name
            await app(scope, receive, send)

        self.app = with_identity


class Status:
    """Whether the service answers queries, and why not."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "the parties have not joined yet"

    def up(self) -> None:
        self.ready, self.reason = True, ""

    def down(self, reason: str) -> None:
        self.ready, self.reason = False, reason


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(
    party: str,
    info: ModelInfo,
    clients: tuple[str, ...],
    book: QueryBook,
    status: Status,
    metrics: ServiceMetrics,
    audit: Callable[..., None],
    query_timeout_s: float,
    tokenizer: bytes | None = None,
) -> Starlette:
    """The ASGI application of one party's client API.

    Args:
        party: this party's name.
        info: the served model's public description.
        clients: the identities allowed to query it.
        book: where accepted queries wait for the computing loop.
        status: readiness, kept by the computing loop.
        metrics: this party's metrics.
        audit: records one event (the party's audit log).
        query_timeout_s: the longest a query waits for its answer.
        tokenizer: a text model's tokenizer.json, served to clients as it is.
    """
    # an INT64 is at most 20 characters and a separator in JSON: bound the body before reading it
    max_body = 4096 + 22 * info.row_values * info.max_batch

    def identity(request: Request) -> str | None:
        return request.scope.get(CLIENT_KEY)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        if status.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": status.reason}, status_code=503)

    def known(name: str) -> JSONResponse | None:
        if name != info.name:
            return _error(404, f"unknown model {name!r} (this service serves {info.name!r})")
        return None

    async def model_metadata(request: Request) -> Response:
        name = request.path_params["name"]
        if (refusal := known(name)) is not None:
            return refusal
        return JSONResponse(
            {
                "name": info.name,
                "versions": ["1"],
                "platform": "smpc",
                "inputs": [
                    {"name": i.name, "datatype": "INT64", "shape": i.metadata_shape(share=True)} for i in info.inputs
                ],
                "outputs": [
                    {"name": o.name, "datatype": "INT64", "shape": o.metadata_shape(share=False)} for o in info.outputs
                ],
                "parameters": {"party": party, **info.parameters()},
            }
        )

    async def model_tokenizer(request: Request) -> Response:
        if (refusal := known(request.path_params["name"])) is not None:
            return refusal
        if tokenizer is None:
            return _error(404, f"model {info.name!r} has no tokenizer: send token ids (input_ids) instead of text")
        return Response(tokenizer, media_type="application/json")

    async def model_ready(request: Request) -> Response:
        if (refusal := known(request.path_params["name"])) is not None:
            return refusal
        return await ready(request)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            raise QueryFailed(413, f"request body of {declared} bytes exceeds the limit of {max_body}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                raise QueryFailed(413, f"request body exceeds the limit of {max_body} bytes")
        return bytes(body)

    def parse(body: bytes, header_length: str | None) -> tuple[str, dict[str, torch.Tensor], int, int]:
        # JSON, or with the OIP binary tensor extension a JSON header of `header_length`
        # bytes followed by the inputs' bytes
        binary = b""
        if header_length is not None:
            if not header_length.isdigit() or int(header_length) > len(body):
                raise QueryFailed(
                    400,
                    f"{HEADER_LENGTH}: expected the JSON header's length in bytes, at most the body's "
                    f"{len(body)}, got {header_length[:40]!r}",
                )
            body, binary = body[: int(header_length)], body[int(header_length) :]
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise QueryFailed(400, f"the body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise QueryFailed(400, "expected a JSON object with 'id' and 'inputs'")
        query_id = doc.get("id")
        if not isinstance(query_id, str) or not 0 < len(query_id) <= MAX_ID_CHARS:
            raise QueryFailed(400, f"'id': expected a string of 1..{MAX_ID_CHARS} characters, the same at every party")
        shares, rows, seq = info.parse(doc.get("inputs"), binary)
        return query_id, shares, rows, seq

    async def infer(request: Request) -> Response:
        client = identity(request) or "?"
        name = request.path_params["name"]
        started = time.monotonic()
        if (refusal := known(name)) is not None:
            metrics.answered(client, "unknown_model")
            return refusal
        if client not in clients:
            audit("refused", client=client, model=name, reason="client not allowed")
            metrics.answered(client, "forbidden")
            return _error(403, f"client {client!r} may not query model {name!r} (serving.clients)")
        try:
            query_id, shares, rows, seq = parse(await read_body(request), request.headers.get(HEADER_LENGTH))
            loop = asyncio.get_running_loop()
            query = Query(client, query_id, shares, loop, loop.create_future(), seq=seq)
            book.add(query)
            audit("query", client=client, model=name, rows=query.rows, tokens=seq or None, id=query_id)
            outputs = await asyncio.wait_for(query.future, timeout=query_timeout_s)
        except QueryFailed as exc:
            metrics.answered(client, str(exc.status))
            audit("query_failed", client=client, model=name, status=exc.status, message=str(exc))
            return _error(exc.status, str(exc))
        except asyncio.TimeoutError:
            book.withdraw(query)
            metrics.answered(client, "504")
            return _error(504, f"no answer within {query_timeout_s:g} s")
        except ClientDisconnect:
            metrics.answered(client, "disconnected")
            return Response(status_code=499)
        metrics.answered(client, "ok", time.monotonic() - started)
        return JSONResponse(
            {
                "model_name": info.name,
                "id": query_id,
                "parameters": {"party": party},
                "outputs": [
                    {"name": n, "datatype": "INT64", "shape": list(v.shape), "data": v.reshape(-1).tolist()}
                    for n, v in outputs.items()
                ],
            }
        )

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/v2/health/live", live),
            Route("/v2/health/ready", ready),
            Route("/v2/models/{name}", model_metadata),
            Route("/v2/models/{name}/ready", model_ready),
            Route("/v2/models/{name}/tokenizer", model_tokenizer),
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/metrics", metrics_text),
        ]
    )


class ApiServer:
    """uvicorn serving `app` on host:port in a background thread (its own event loop),
    with `context` (a TLS server context that requires a client certificate)."""

    def __init__(self, app: Starlette, host: str, port: int, context: ssl.SSLContext, name: str) -> None:
        self.host, self.port, self.name = host, port, name
        try:  # bound here, so that a port in use is one clear error before anything starts
            self._sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise PartyError(f"{name}: cannot listen for clients on {host}:{port} (api_port): {exc.strerror}") from None
        config = uvicorn.Config(
            app,
            ssl_context_factory=lambda _config, _default: context,
            http=_IdentifiedH11,
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise PartyError(f"{self.name}: the client API did not start on {self.host}:{self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
