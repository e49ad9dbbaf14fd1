"""The client SDK: `smpc.Client(config, client="analyst").infer(x)`, `.infer(input_ids=...,
attention_mask=...)` for a packed program's named inputs, `.infer_text([...])` for a text
model's sentences.

The client encodes and splits its inputs on its own machine (smpc.serve.shares, from
the OS's CSPRNG; token ids as one-hot rows, tokenized here with the model's public
tokenizer), sends one share to each party's client API over mutual TLS (its certificate
from the consortium CA), and adds up the parties' shares of the answer: no party sees
the query or the answer. HTTP is httpx's (HTTP/1.1, kept-alive
connections, one pool per party).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import httpx
import torch

from smpc import keys, transport
from smpc.config import Config, load_config
from smpc.model.program import InputSpec
from smpc.errors import ConversionError, SmpcError
from smpc.serve import shares
from smpc.serve.model_info import HEADER_LENGTH, ModelInfo, TensorInfo


_BINARY = {"content-type": "application/octet-stream"}


class ServiceError(SmpcError):
    """A query got no answer: which party said what, or which party is unreachable.

    Check that the service runs (`smpc serve`) and that this client is in
    serving.clients; the line names each party that did not answer."""

    code = "service"


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
            ports, the CA.
        client: this client's identity: `tls.certs`/CLIENT.pem and CLIENT.key.
        timeout_s: the longest one query may take (default: the service's
            `serving.query_timeout_s`, and 10 s for the way there and back).

    The model's interface (its inputs, outputs and limits: smpc.serve.model_info) is read
    from the parties' metadata on the first query; every party must describe the same.
    """

    def __init__(self, config: Config | str | Path, client: str, timeout_s: float | None = None) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        if self.config.serving is None:
            raise SmpcError(f"{self.config.source}: no serving section: this config does not describe a service")
        if self.config.tls is None:
            raise SmpcError(f"{self.config.source}: tls: required to reach a service")
        files = self.config.client_files(client)
        for path in files:
            if not path.is_file():
                raise SmpcError(
                    f"{path}: TLS file of client {client!r} not found (create it with `smpc keys init` or `rotate`)"
                )
        self.client = client
        self.timeout_s = timeout_s if timeout_s is not None else self.config.serving.query_timeout_s + 10.0
        keys.check_certificate(client, *files)
        self._context = transport.client_context(*files)
        self._parties = [(p.name, f"https://{p.host}:{p.api_port}") for p in self.config.parties]
        self.model = self.config.serving.model_name
        # a zoo model's one input shape is in the config; a packed program's comes from the metadata
        self.input_shape = tuple(self.config.model.input_shape) if self.config.model.input_shape else None
        self.precision_bits = self.config.protocol.precision_bits
        self.info: ModelInfo | None = None  # from the parties' metadata, on the first query
        self._tokenizer: Any = None
        self.sent_bytes = 0  # request bodies sent to each party, summed over parties
        self._sync: list[httpx.Client] | None = None
        self._async: list[httpx.AsyncClient] | None = None

    # -- requests, shared by the two flavours --------------------------------------
    def _known(self) -> ModelInfo:
        # the model's interface, learnt before any query is made
        if self.info is None:
            raise RuntimeError("the model's interface is not known yet (describe() learns it)")
        return self.info

    def _named(self, x: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        info = self._known()
        if x is not None:
            if inputs or len(info.inputs) != 1:
                raise ValueError(
                    f"model {self.model!r} takes inputs {[i.name for i in info.inputs]}: pass them by name"
                )
            return {info.inputs[0].name: x}
        return inputs

    def _bodies(self, named: dict[str, Any]) -> tuple[list[bytes], dict[str, str], bool, int]:
        """One JSON request body per party (the query's shares), whether a single row
        without a batch dimension was given, and the query's sequence length."""
        info = self._known()
        expected = [i.name for i in info.inputs]
        missing, extra = [n for n in expected if n not in named], [n for n in named if n not in expected]
        if missing or extra:
            said = "; ".join(
                filter(None, [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else ""])
            )
            raise ValueError(f"inputs: {said} (model {self.model!r} takes {expected})")
        values = {spec.name: torch.as_tensor(named[spec.name]) for spec in info.inputs}
        single = all(v.dim() == len(spec.shape) for spec, v in zip(info.inputs, values.values()))
        if single:
            values = {k: v.unsqueeze(0) for k, v in values.items()}
        rows: int | None = None
        seq: int | None = None
        encoded = {}
        for spec in info.inputs:
            v = values[spec.name]
            want = [None, *spec.shape]
            if spec.seq_dim is not None:
                want[spec.seq_dim] = None
            if v.dim() != len(want) or any(w is not None and w != d for w, d in zip(want, v.shape)):
                shown = ", ".join("rows" if i == 0 else ("tokens" if w is None else str(w)) for i, w in enumerate(want))
                raise ValueError(
                    f"{spec.name}: expected shape [{shown}] (or one row without the batch dimension), got {list(v.shape)}"
                )
            if rows is not None and v.shape[0] != rows:
                raise ValueError(f"{spec.name}: {v.shape[0]} rows, the other inputs {rows}")
            rows = v.shape[0]
            if spec.seq_dim is not None:
                if seq is not None and v.shape[spec.seq_dim] != seq:
                    raise ValueError(f"{spec.name}: {v.shape[spec.seq_dim]} tokens, the other inputs {seq}")
                seq = v.shape[spec.seq_dim]
            encoded[spec.name] = _encode(spec, v, self.precision_bits)
        if rows is None or not 1 <= rows <= info.max_batch:
            raise ValueError(f"expected 1..{info.max_batch} rows in one query (serving.max_batch), got {rows}")
        if seq is not None and (why := info.check_length(seq)) is not None:
            raise ValueError(f"a query of {why}")
        if seq is not None and info.masked:
            # padded here to its length bucket with masked positions (zeros: id 0, mask 0),
            # so that the parties learn the bucket of a sentence's length, never the length
            bucket = min(b for b in info.seq_buckets if b >= seq)
            for spec in info.inputs:
                if spec.seq_dim is not None and bucket > seq:
                    e = encoded[spec.name]
                    pad = list(e.shape)
                    pad[spec.seq_dim] = bucket - seq
                    encoded[spec.name] = torch.cat([e, torch.zeros(pad, dtype=e.dtype)], dim=spec.seq_dim)
        parts = {name: shares.split(e, len(self._parties)) for name, e in encoded.items()}
        query_id = secrets.token_hex(16)  # the same id at every party names this query
        # the OIP's binary tensor extension: a JSON header naming each input's shape and
        # byte count, then the shares as little-endian int64 (8 bytes a value, where JSON
        # text took about 21 and its parsing most of a large query's overhead)
        header = json.dumps(
            {
                "id": query_id,
                "inputs": [
                    {
                        "name": name,
                        "shape": list(ps[0].shape),
                        "datatype": "INT64",
                        "parameters": {"binary_data_size": 8 * ps[0].numel()},
                    }
                    for name, ps in parts.items()
                ],
            }
        ).encode()
        bodies = [
            header + b"".join(ps[i].contiguous().numpy().astype("<i8", copy=False).tobytes() for ps in parts.values())
            for i in range(len(self._parties))
        ]
        self.sent_bytes += sum(map(len, bodies))
        return bodies, {**_BINARY, HEADER_LENGTH: str(len(header))}, single, seq or 0

    def _answer(
        self, responses: list[httpx.Response], single: bool, seq: int = 0
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        errors = []
        for (name, _url), r in zip(self._parties, responses):
            if r.status_code != 200:
                try:
                    said = r.json().get("error", r.text)
                except ValueError:
                    said = r.text.strip()[:200]
                errors.append(f"party {name}: {r.status_code} {said}")
        if errors:
            raise ServiceError("; ".join(errors))
        answers = [{o["name"]: o for o in r.json()["outputs"]} for r in responses]
        out = {}
        for spec in self._known().outputs:
            got: list[Any] = [a.get(spec.name) for a in answers]  # JSON objects
            if any(g is None for g in got) or len({tuple(g["shape"]) for g in got}) != 1:
                raise ServiceError(f"the parties answered {spec.name!r} with different or missing shapes")
            parts = [torch.tensor(g["data"], dtype=torch.long).reshape(g["shape"]) for g in got]
            value = shares.decode(shares.reconstruct(parts), self.precision_bits)
            if spec.seq_dim is not None and seq:  # the query's own length (it was padded to its bucket)
                value = value.narrow(spec.seq_dim, 0, seq)
            out[spec.name] = value[0] if single else value
        return next(iter(out.values())) if len(out) == 1 else out

    def _unreachable(self, name: str, url: str, exc: Exception) -> ServiceError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError) and isinstance(exc.__cause__, ssl.SSLError):
            reason = f"TLS handshake failed: {exc.__cause__}"
        return ServiceError(f"party {name} at {url} is unreachable: {reason}")

    def describe(self) -> ModelInfo:
        """The served model's interface, from the parties' metadata (asked once)."""
        if self.info is None:
            self._learn(self._everyone_sync("GET", f"/v2/models/{self.model}"))
        return self._known()

    def _learn(self, responses: list[httpx.Response]) -> None:
        # every party must describe the same model, in the same ring
        seen = []
        for (name, _url), r in zip(self._parties, responses):
            if r.status_code != 200:
                raise ServiceError(f"party {name}: {r.status_code} {r.text.strip()[:200]}")
            try:
                seen.append(ModelInfo.from_metadata(r.json()))
            except (ValueError, KeyError, TypeError) as exc:
                raise ServiceError(f"party {name}: malformed model metadata ({exc})") from None
        if len(set(map(repr, seen))) != 1:
            raise ServiceError(f"the parties describe model {self.model!r} differently")
        info = seen[0]
        if info.precision_bits != self.precision_bits:
            raise ServiceError(
                f"the service computes at {info.precision_bits} bits; the config says {self.precision_bits}"
            )
        if self.input_shape is not None and len(info.inputs) == 1 and info.inputs[0].shape != self.input_shape:
            raise ServiceError(
                f"the service's model takes {list(info.inputs[0].shape)}; the config says {list(self.input_shape)}"
            )
        self.info = info

    def _text_inputs(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize on this machine and pad to the longest sentence (masked positions)."""
        info = self._known()
        if isinstance(sentences, str) or not sentences or not all(isinstance(t, str) for t in sentences):
            raise ValueError("expected a non-empty list of sentences (strings)")
        encodings = self._tokenizer.encode_batch(list(sentences))
        for i, e in enumerate(encodings):
            if len(e.ids) > info.max_seq and not info.truncate_text:
                raise ValueError(
                    f"sentence {i + 1} has {len(e.ids)} tokens; the longest length served is {info.max_seq} "
                    "(serving.truncate_text: true cuts longer sentences)"
                )
        length = min(info.max_seq, max(len(e.ids) for e in encodings))
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        named = {}
        for spec in info.inputs:
            if spec.name not in fields:
                raise ValueError(
                    f"model {self.model!r} takes {spec.name!r}, which text alone cannot supply: use infer()"
                )
            rows = [getattr(e, fields[spec.name])[:length] for e in encodings]
            named[spec.name] = torch.tensor([r + [0] * (length - len(r)) for r in rows])
        return named

    @staticmethod
    def _check_tokenizers(responses: list[httpx.Response], parties: list[tuple[str, str]]) -> bytes:
        for (name, _), r in zip(parties, responses):
            if r.status_code != 200:
                said = (
                    r.json().get("error", r.text)
                    if r.headers.get("content-type", "").startswith("application/json")
                    else r.text
                )
                raise ServiceError(f"party {name}: {r.status_code} {said}")
        if len({r.content for r in responses}) != 1:
            raise ServiceError("the parties serve different tokenizers")
        return responses[0].content

    def _load_tokenizer(self, text: bytes) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(text.decode())
        tokenizer.no_padding()  # padded here, to this query's longest sentence
        tokenizer.no_truncation()
        self._tokenizer = tokenizer

    def _need_tokenizer(self) -> None:
        if not self._known().tokenizer:
            raise ValueError(f"model {self.model!r} has no tokenizer: send token ids with infer(input_ids=..., ...)")

    # -- synchronous ----------------------------------------------------------------
    def _everyone_sync(
        self, method: str, path: str, bodies: list[bytes] | None = None, headers: dict[str, str] | None = None
    ) -> list[httpx.Response]:
        from concurrent.futures import ThreadPoolExecutor

        if self._sync is None:
            self._sync = [httpx.Client(verify=self._context, timeout=self.timeout_s) for _ in self._parties]
        clients = self._sync

        def one(i: int) -> httpx.Response | Exception:
            name, url = self._parties[i]
            try:
                return clients[i].request(
                    method,
                    f"{url}{path}",
                    content=bodies[i] if bodies else None,
                    headers=headers,
                    extensions={"sni_hostname": name},
                )
            except httpx.HTTPError as exc:
                return self._unreachable(name, url, exc)

        with ThreadPoolExecutor(len(self._parties)) as pool:
            return _all_or_raise(list(pool.map(one, range(len(self._parties)))))

    def infer(self, x: Any = None, **inputs: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """The model's output for one query: `x` for a model of one input, else its inputs
        by name (e.g. ``input_ids=..., attention_mask=...``), one row or [rows, ...] up to
        serving.max_batch, sequences up to the longest length served. Returns the output
        (or, for a model of several, the outputs by name; a sequence output has the
        query's own length); raises ServiceError naming the party when a party cannot
        answer, ValueError (naming the input) for an input the model cannot take."""
        if self.info is None:
            self._learn(self._everyone_sync("GET", f"/v2/models/{self.model}"))
        bodies, headers, single, seq = self._bodies(self._named(x, inputs))
        return self._answer(self._everyone_sync("POST", f"/v2/models/{self.model}/infer", bodies, headers), single, seq)

    def infer_text(self, sentences: list[str]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The model's output for `sentences` (one row each), tokenized on this machine
        with the model's own tokenizer (fetched from the parties: it is public); the
        token ids are shared like any input, never sent in the clear."""
        if self.info is None:
            self._learn(self._everyone_sync("GET", f"/v2/models/{self.model}"))
        self._need_tokenizer()
        if self._tokenizer is None:
            self._load_tokenizer(
                self._check_tokenizers(self._everyone_sync("GET", f"/v2/models/{self.model}/tokenizer"), self._parties)
            )
        return self.infer(**self._text_inputs(sentences))

    def get(self, party: str, path: str) -> httpx.Response:
        """GET `path` of one party's API (health, metadata, metrics)."""
        url = dict(self._parties)[party]
        with httpx.Client(verify=self._context, timeout=self.timeout_s) as http:
            return http.get(f"{url}{path}", extensions={"sni_hostname": party})

    # -- asynchronous ---------------------------------------------------------------
    async def _everyone_async(
        self, method: str, path: str, bodies: list[bytes] | None = None, headers: dict[str, str] | None = None
    ) -> list[httpx.Response]:
        if self._async is None:
            # a few connections per party: httpcore's pool scans every connection per request
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            self._async = [
                httpx.AsyncClient(verify=self._context, timeout=self.timeout_s, limits=limits) for _ in self._parties
            ]
        clients = self._async

        async def call(i: int) -> httpx.Response:
            name, url = self._parties[i]
            try:
                return await clients[i].request(
                    method,
                    f"{url}{path}",
                    content=bodies[i] if bodies else None,
                    headers=headers,
                    extensions={"sni_hostname": name},
                )
            except httpx.HTTPError as exc:
                raise self._unreachable(name, url, exc) from None

        got = await asyncio.gather(*(call(i) for i in range(len(self._parties))), return_exceptions=True)
        return _all_or_raise(list(got))

    async def ainfer(self, x: Any = None, **inputs: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """`infer` for asyncio: many queries can be in flight from one client."""
        if self.info is None:
            self._learn(await self._everyone_async("GET", f"/v2/models/{self.model}"))
        bodies, headers, single, seq = self._bodies(self._named(x, inputs))
        return self._answer(
            await self._everyone_async("POST", f"/v2/models/{self.model}/infer", bodies, headers), single, seq
        )

    async def ainfer_text(self, sentences: list[str]) -> torch.Tensor | dict[str, torch.Tensor]:
        """`infer_text` for asyncio."""
        if self.info is None:
            self._learn(await self._everyone_async("GET", f"/v2/models/{self.model}"))
        self._need_tokenizer()
        if self._tokenizer is None:
            got = await self._everyone_async("GET", f"/v2/models/{self.model}/tokenizer")
            self._load_tokenizer(self._check_tokenizers(got, self._parties))
        return await self.ainfer(**self._text_inputs(sentences))

    async def aclose(self) -> None:
        for c in self._async or []:
            await c.aclose()
        self._async = None

    def close(self) -> None:
        for c in self._sync or []:
            c.close()
        self._sync = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _encode(spec: TensorInfo, value: torch.Tensor, precision_bits: int) -> torch.Tensor:
    """One input's values as ring elements at the fixed-point scale, checked first: token
    ids inside the vocabulary (then one-hot rows), masks 0/1, floats finite and in range."""
    if spec.kind == "float":
        try:
            return shares.encode(value, precision_bits)
        except ValueError as exc:
            raise ValueError(f"{spec.name}: {exc}") from None
    try:  # the same checks as a data owner's rows
        InputSpec(spec.name, (1, *spec.shape), spec.kind, spec.depth).check_values(value, "query")
    except ConversionError as exc:
        raise ValueError(str(exc)) from None
    value = value.long()
    if spec.kind == "ids":
        value = torch.nn.functional.one_hot(value, spec.depth)
    return shares.encode(value, precision_bits)
