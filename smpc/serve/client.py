"""The client SDK: `smpc.Client(config, client="analyst").infer(x)`.

The client encodes and splits its input on its own machine (smpc.serve.shares, from
the OS's CSPRNG), sends one share to each party's client API over mutual TLS (its
certificate from the consortium CA), and adds up the parties' shares of the answer:
no party sees the query or the answer. HTTP is httpx's (HTTP/1.1, kept-alive
connections, one pool per party).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from pathlib import Path
from typing import Any

import httpx
import torch

from smpc import keys, transport
from smpc.config import Config, load_config
from smpc.errors import SmpcError
from smpc.serve import shares


class ServiceError(SmpcError):
    """A query got no answer: which party said what, or which party is unreachable."""


def _all_or_raise(results: list[Any]) -> list[httpx.Response]:
    # every party's answer, or one error naming each party that could not be reached
    failures = [r for r in results if isinstance(r, BaseException)]
    for r in failures:
        if not isinstance(r, ServiceError):
            raise r
    if failures:
        raise ServiceError("; ".join(str(f) for f in failures))
    return results


class Client:
    """A client of a service described by `config` (the consortium's config file).

    Args:
        config: the service's config (or its path): the parties' addresses and api
            ports, the CA, the model's input shape.
        client: this client's identity: `tls.certs`/CLIENT.pem and CLIENT.key.
        timeout_s: the longest one query may take.
    """

    def __init__(self, config: Config | str | Path, client: str, timeout_s: float = 60.0) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        if self.config.serving is None:
            raise SmpcError(f"{self.config.source}: no serving section: this config does not describe a service")
        if self.config.tls is None:
            raise SmpcError(f"{self.config.source}: tls: required to reach a service")
        files = self.config.client_files(client)
        for path in files:
            if not path.is_file():
                raise SmpcError(f"{path}: TLS file of client {client!r} not found (create it with `smpc keys init` or `rotate`)")
        self.client = client
        self.timeout_s = timeout_s
        keys.check_certificate(client, *files)
        self._context = transport.client_context(*files)
        self._parties = [(p.name, f"https://{p.host}:{p.api_port}") for p in self.config.parties]
        self.model = self.config.serving.model_name
        self.input_shape = tuple(self.config.model.input_shape)
        self.max_batch = self.config.serving.max_batch
        self.precision_bits = self.config.protocol.precision_bits
        self._input: str | None = None  # the model's input name, from the parties' metadata
        self._sync: list[httpx.Client] | None = None
        self._async: list[httpx.AsyncClient] | None = None

    # -- requests, shared by the two flavours --------------------------------------
    def _bodies(self, x: torch.Tensor) -> tuple[list[dict[str, Any]], bool]:
        x = torch.as_tensor(x, dtype=torch.float32)
        single = tuple(x.shape) == self.input_shape
        if single:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected an input of shape {list(self.input_shape)} or [rows, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}")
        if not 1 <= x.shape[0] <= self.max_batch:
            raise ValueError(f"expected 1..{self.max_batch} rows in one query (serving.max_batch), got {x.shape[0]}")
        parts = shares.split(shares.encode(x, self.precision_bits), len(self._parties))
        query_id = secrets.token_hex(16)  # the same id at every party names this query
        bodies = [
            {"id": query_id, "inputs": [{"name": self._input, "shape": list(s.shape), "datatype": "INT64", "data": s.reshape(-1).tolist()}]}
            for s in parts
        ]
        return bodies, single

    def _answer(self, responses: list[httpx.Response], single: bool) -> torch.Tensor:
        errors = []
        for (name, url), r in zip(self._parties, responses):
            if r.status_code != 200:
                try:
                    said = r.json().get("error", r.text)
                except ValueError:
                    said = r.text.strip()[:200]
                errors.append(f"party {name}: {r.status_code} {said}")
        if errors:
            raise ServiceError("; ".join(errors))
        outs = [r.json()["outputs"][0] for r in responses]
        shapes = {tuple(o["shape"]) for o in outs}
        if len(shapes) != 1:
            raise ServiceError(f"the parties answered with different shapes: {sorted(shapes)}")
        parts = [torch.tensor(o["data"], dtype=torch.long).reshape(o["shape"]) for o in outs]
        value = shares.decode(shares.reconstruct(parts), self.precision_bits)
        return value[0] if single else value

    def _unreachable(self, name: str, url: str, exc: Exception) -> ServiceError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError) and isinstance(exc.__cause__, ssl.SSLError):
            reason = f"TLS handshake failed: {exc.__cause__}"
        return ServiceError(f"party {name} at {url} is unreachable: {reason}")

    def _learn(self, responses: list[httpx.Response]) -> None:
        # every party must describe the same model, in the same ring
        seen = []
        for (name, url), r in zip(self._parties, responses):
            if r.status_code != 200:
                raise ServiceError(f"party {name}: {r.status_code} {r.text.strip()[:200]}")
            doc = r.json()
            seen.append((doc["inputs"][0]["name"], tuple(doc["inputs"][0]["shape"][1:]), doc["parameters"]["precision_bits"]))
        if len(set(seen)) != 1:
            raise ServiceError(f"the parties describe model {self.model!r} differently: {seen}")
        self._input, shape, bits = seen[0]
        if shape != self.input_shape or bits != self.precision_bits:
            raise ServiceError(f"the service's model takes {list(shape)} at {bits} bits; the config says {list(self.input_shape)} at {self.precision_bits}")

    # -- synchronous ----------------------------------------------------------------
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for `x` (one row, or [rows, ...] up to serving.max_batch);
        raises ServiceError naming the party when a party cannot answer."""
        from concurrent.futures import ThreadPoolExecutor

        if self._sync is None:
            self._sync = [httpx.Client(verify=self._context, timeout=self.timeout_s) for _ in self._parties]

        def call(i: int, method: str, path: str, body: dict | None = None) -> httpx.Response:
            name, url = self._parties[i]
            try:
                return self._sync[i].request(method, f"{url}{path}", json=body, extensions={"sni_hostname": name})
            except httpx.HTTPError as exc:
                raise self._unreachable(name, url, exc) from None

        def everyone(method: str, path: str, bodies: list | None = None) -> list[httpx.Response]:
            def one(i: int) -> httpx.Response | Exception:
                try:
                    return call(i, method, path, bodies[i] if bodies else None)
                except ServiceError as exc:
                    return exc
            return _all_or_raise(list(pool.map(one, range(n))))

        n = len(self._parties)
        with ThreadPoolExecutor(n) as pool:
            if self._input is None:
                self._learn(everyone("GET", f"/v2/models/{self.model}"))
            bodies, single = self._bodies(x)
            return self._answer(everyone("POST", f"/v2/models/{self.model}/infer", bodies), single)

    def get(self, party: str, path: str) -> httpx.Response:
        """GET `path` of one party's API (health, metadata, metrics)."""
        url = dict(self._parties)[party]
        with httpx.Client(verify=self._context, timeout=self.timeout_s) as http:
            return http.get(f"{url}{path}", extensions={"sni_hostname": party})

    # -- asynchronous ---------------------------------------------------------------
    async def ainfer(self, x: torch.Tensor) -> torch.Tensor:
        """`infer` for asyncio: many queries can be in flight from one client."""
        if self._async is None:
            # a few connections per party: httpcore's pool scans every connection per request
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            self._async = [httpx.AsyncClient(verify=self._context, timeout=self.timeout_s, limits=limits) for _ in self._parties]

        async def call(i: int, method: str, path: str, body: dict | None = None) -> httpx.Response:
            name, url = self._parties[i]
            try:
                return await self._async[i].request(method, f"{url}{path}", json=body, extensions={"sni_hostname": name})
            except httpx.HTTPError as exc:
                raise self._unreachable(name, url, exc) from None

        async def everyone(method: str, path: str, bodies: list | None = None) -> list[httpx.Response]:
            got = await asyncio.gather(
                *(call(i, method, path, bodies[i] if bodies else None) for i in range(n)), return_exceptions=True
            )
            return _all_or_raise(list(got))

        n = len(self._parties)
        if self._input is None:
            self._learn(await everyone("GET", f"/v2/models/{self.model}"))
        bodies, single = self._bodies(x)
        return self._answer(await everyone("POST", f"/v2/models/{self.model}/infer", bodies), single)

    async def aclose(self) -> None:
        for c in self._async or []:
            await c.aclose()
        self._async = None

    def close(self) -> None:
        for c in self._sync or []:
            c.close()
        self._sync = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
