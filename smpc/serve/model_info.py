"""What a served model takes and gives, as the parties publish it and clients read it.

One description, shared by the party's API (which checks every query against it) and the
client SDK (which encodes and shares its inputs by it): the inputs by name with their kind
(fixed-point floats, token ids shared as one-hot rows, 0/1 masks) and the dimension that
is the sequence, the outputs, the most rows and tokens a query may have, and whether the
model has a tokenizer. No weights, nothing secret: it is the model's public interface.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import torch

from smpc.serve.queries import QueryFailed

# The OIP binary tensor extension (KServe v2 REST, as Triton implements it): a request's
# JSON header is this many bytes at the start of the body; each input that has
# parameters.binary_data_size takes its bytes (little-endian) from what follows, in order.
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output. `shape` is one row at the longest length served; `seq_dim`
    the dimension of the full shape (batch first) that follows the sequence length, or
    None. Inputs also have `kind` and `depth` (smpc.model.program.InputSpec)."""

    name: str
    shape: tuple[int, ...]
    kind: str = "float"
    depth: int = 0
    seq_dim: int | None = None

    @property
    def share_shape(self) -> tuple[int, ...]:
        """One row of what a client shares: one-hot rows of width `depth` for ids."""
        return self.shape + (self.depth,) if self.kind == "ids" else self.shape

    def metadata_shape(self, share: bool) -> list[int]:
        """OIP's shape: -1 for the batch and for the sequence."""
        shape = [-1, *(self.share_shape if share else self.shape)]
        if self.seq_dim is not None:
            shape[self.seq_dim] = -1
        return shape


@dataclass(frozen=True)
class ModelInfo:
    """The served model's public interface (see the module's docstring)."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    max_batch: int
    precision_bits: int
    parties: tuple[str, ...]
    protocol: dict[str, Any] = field(default_factory=dict)
    max_seq: int = 0  # the longest sequence served (0: the model has none)
    seq_buckets: tuple[int, ...] = ()  # the lengths a query is padded to
    masked: bool = False  # shorter sequences are padded with masked positions
    tokenizer: bool = False
    truncate_text: bool = False

    @property
    def row_values(self) -> int:
        """Ring elements one row of all inputs takes at the longest length."""
        return sum(math.prod(i.share_shape) for i in self.inputs)

    def parameters(self) -> dict[str, Any]:
        """The metadata's `parameters` beyond the parties' own."""
        return {
            "max_batch": self.max_batch,
            "precision_bits": self.precision_bits,
            "ring_bits": 64,
            "parties": list(self.parties),
            "protocol": self.protocol,
            "inputs": [asdict(i) for i in self.inputs],
            "outputs": [asdict(o) for o in self.outputs],
            "max_seq": self.max_seq,
            "seq_buckets": list(self.seq_buckets),
            "masked": self.masked,
            "tokenizer": self.tokenizer,
            "truncate_text": self.truncate_text,
        }

    @classmethod
    def from_metadata(cls, doc: dict[str, Any]) -> ModelInfo:
        """The description in a party's metadata answer (ValueError when malformed)."""
        p = doc["parameters"]

        def tensor(d: dict[str, Any]) -> TensorInfo:
            seq_dim = d.get("seq_dim")
            return TensorInfo(
                str(d["name"]),
                tuple(int(v) for v in d["shape"]),
                str(d.get("kind", "float")),
                int(d.get("depth", 0)),
                None if seq_dim is None else int(seq_dim),
            )

        return cls(
            name=str(doc["name"]),
            inputs=tuple(tensor(d) for d in p["inputs"]),
            outputs=tuple(tensor(d) for d in p["outputs"]),
            max_batch=int(p["max_batch"]),
            precision_bits=int(p["precision_bits"]),
            parties=tuple(p["parties"]),
            protocol=dict(p.get("protocol", {})),
            max_seq=int(p.get("max_seq", 0)),
            seq_buckets=tuple(int(v) for v in p.get("seq_buckets", ())),
            masked=bool(p.get("masked", False)),
            tokenizer=bool(p.get("tokenizer", False)),
            truncate_text=bool(p.get("truncate_text", False)),
        )

    def check_length(self, seq: int) -> str | None:
        """Why a query of `seq` tokens cannot be served, or None."""
        if seq > self.max_seq:
            return f"{seq} tokens; the longest sequence served is {self.max_seq}"
        if seq < 1:
            return "an empty sequence"
        if not self.masked and seq not in self.seq_buckets:
            return (
                f"{seq} tokens; a model without an attention mask cannot be padded: expected one of "
                f"{', '.join(map(str, self.seq_buckets))}"
            )
        return None

    def parse(self, inputs: Any, binary: bytes = b"") -> tuple[dict[str, torch.Tensor], int, int]:
        """A query's OIP `inputs` (this party's shares) as tensors by name, with the rows
        and sequence length; QueryFailed (400 or 413) naming the input otherwise. An input
        gives its values as `data` (JSON integers) or, with the binary extension, as
        `parameters.binary_data_size` bytes of `binary`, the body after the JSON header."""
        if not isinstance(inputs, list) or not all(isinstance(t, dict) for t in inputs):
            raise QueryFailed(400, f"'inputs': expected a list of tensors {[i.name for i in self.inputs]}")
        raw = _binary_parts(inputs, binary)
        given = [t.get("name") for t in inputs]
        expected = [i.name for i in self.inputs]
        missing = [n for n in expected if n not in given]
        extra = [n for n in given if n not in expected]
        if missing or extra or len(given) != len(set(given)):
            said = "; ".join(
                filter(
                    None,
                    [
                        f"missing {missing}" if missing else "",
                        f"unexpected {extra}" if extra else "",
                        "an input is given twice" if len(given) != len(set(given)) and not extra else "",
                    ],
                )
            )
            raise QueryFailed(400, f"inputs: {said} (the model takes {expected})")
        by_name = {t["name"]: t for t in inputs}
        out: dict[str, torch.Tensor] = {}
        rows: int | None = None
        seq: int | None = None
        for spec in self.inputs:
            t = by_name[spec.name]
            where = f"inputs[{given.index(spec.name)}] ({spec.name})"
            if t.get("datatype") != "INT64":
                raise QueryFailed(
                    400, f"{where}.datatype: expected 'INT64' (a share in the ring), got {t.get('datatype')!r}"
                )
            shape = t.get("shape")
            want = [-1, *spec.share_shape]
            if spec.seq_dim is not None:
                want[spec.seq_dim] = -1
            if (
                not isinstance(shape, list)
                or not all(type(d) is int for d in shape)
                or len(shape) != len(want)
                or any(w != -1 and w != d for w, d in zip(want, shape))
            ):
                shown = ", ".join("rows" if i == 0 else ("tokens" if w == -1 else str(w)) for i, w in enumerate(want))
                raise QueryFailed(400, f"{where}.shape: expected [{shown}], got {shape!r}")
            if rows is not None and shape[0] != rows:
                raise QueryFailed(400, f"{where}.shape: {shape[0]} rows, the other inputs {rows}")
            rows = shape[0]
            if spec.seq_dim is not None:
                if seq is not None and shape[spec.seq_dim] != seq:
                    raise QueryFailed(400, f"{where}.shape: {shape[spec.seq_dim]} tokens, the other inputs {seq}")
                seq = shape[spec.seq_dim]
            if not 1 <= rows <= self.max_batch:
                raise QueryFailed(
                    413 if rows > self.max_batch else 400,
                    f"{where}.shape: expected 1..{self.max_batch} rows (serving.max_batch), got {rows}",
                )
            if seq is not None and (why := self.check_length(seq)) is not None:
                raise QueryFailed(413 if seq > self.max_seq else 400, f"{where}.shape: {why}")
            data = t.get("data")
            count = math.prod(shape)
            part = raw.get(given.index(spec.name))
            if part is not None:
                if data is not None:
                    raise QueryFailed(400, f"{where}: both data and parameters.binary_data_size; expected one")
                if len(part) != 8 * count:
                    raise QueryFailed(
                        400,
                        f"{where}.parameters.binary_data_size: expected {8 * count} bytes "
                        f"({count} little-endian int64) for shape {shape}, got {len(part)}",
                    )
                out[spec.name] = torch.from_numpy(np.frombuffer(part, dtype="<i8").astype(np.int64)).reshape(shape)
                continue
            if not isinstance(data, list) or len(data) != count:
                raise QueryFailed(400, f"{where}.data: expected {count} integers for shape {shape}")
            if not all(type(v) is int and -(1 << 63) <= v < (1 << 63) for v in data):
                raise QueryFailed(400, f"{where}.data: expected 64-bit signed integers (ring elements)")
            out[spec.name] = torch.tensor(data, dtype=torch.long).reshape(shape)
        return out, cast(int, rows), seq or 0  # rows: set by the first input (a served model has inputs)


def _binary_parts(inputs: list[dict[str, Any]], binary: bytes) -> dict[int, bytes]:
    # each input's bytes by its index in the request, cut from `binary` in order
    parts: dict[int, bytes] = {}
    offset = 0
    for index, t in enumerate(inputs):
        parameters = t.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        if type(size) is not int or size < 0:
            raise QueryFailed(400, f"inputs[{index}].parameters.binary_data_size: expected a byte count, got {size!r}")
        parts[index] = binary[offset : offset + size]
        offset += size
    if offset != len(binary):
        raise QueryFailed(
            400,
            f"the body has {len(binary)} bytes after its JSON header; the inputs' binary_data_size add up to {offset}",
        )
    return parts


def describe(config: Any, programs: dict[Any, Any], layout: Any = None) -> ModelInfo:
    """The served model's description, from the config, its programs by shape bucket
    (smpc.model.buckets) and, for a packed directory, its layout (smpc.model.pack.Layout)."""
    top = max(programs)
    program = programs[top]
    dims = layout.seq_dims if layout is not None else {}
    inputs = tuple(TensorInfo(s.name, tuple(s.shape[1:]), s.kind, s.depth, dims.get(s.name)) for s in program.inputs)
    outputs = tuple(TensorInfo(n, tuple(shape[1:]), seq_dim=dims.get(n)) for n, shape in program.outputs)
    serving = config.serving
    return ModelInfo(
        name=serving.model_name,
        inputs=inputs,
        outputs=outputs,
        max_batch=serving.max_batch,
        precision_bits=config.protocol.precision_bits,
        parties=tuple(config.names),
        protocol={
            "comparisons": config.protocol.comparisons,
            "truncation": config.plan.truncation,
            "range_checks": config.protocol.range_checks,
        },
        max_seq=top.seq,
        seq_buckets=tuple(sorted({b.seq for b in programs if b.seq})),
        masked=bool(layout is not None and layout.masked),
        tokenizer=bool(layout is not None and layout.tokenizer),
        truncate_text=serving.truncate_text,
    )
