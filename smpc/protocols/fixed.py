"""Weights paid for once: Beaver products with a fixed operand (`randomness: dealer`).

CrypTen's Beaver product x * y opens x - a and y - b for a fresh triple (a, b, c = a b)
every time, so every linear layer re-opens a masked copy of its whole weight matrix on
every batch, and a lookup on secret ids the whole embedding table. A model's weights do
not change between batches, so the mask of the weight side need not either: the
fixed-operand mask reuse of SecureML (Mohassel and Zhang, "SecureML: A System for
Scalable Privacy-Preserving Machine Learning", IEEE S&P 2017, section 4.2).

- **Once per session**, for every weight W that is the fixed operand of a product
  (`fixed_names`: a linear or convolution weight, a lookup table read by secret ids),
  party i draws a share B_i of a mask B from a stream of the key it shares with the
  dealer (`mask_key`), and the parties open D = W - B (one round for all of them;
  `open_masks`). The dealer, holding every party's key, knows B; nobody else does.
- **Per batch**, a product x op W takes a fresh pair (A, C = A op B) from the dealer
  (party i draws A_i and C_i from its batch stream; party 0 gets C_0 as the dealer's
  correction), opens only E = x - A, and each party computes
  z_i = E op B_i + A_i op D + C_i (+ E op D at party 0), so that
  sum z_i = (E + A) op (D + B) = x op W; then the usual truncation.

Why it reveals nothing: D = W - B is uniform whatever W, because B is uniform and used
for nothing else that is opened; each batch's E = x - A is uniform and independent of D
and of every other batch's E, because A is fresh. The pair (A, C) is correlated with B,
but its shares are the parties' secret draws and the dealer's correction, never opened.
So the parties' view (D once, then one E per product) is a list of independent uniform
ring elements, the same for any W and x (SECURITY.md).

Bytes per product per party: |x| instead of |x| + |W|; per session: |W| once.

Linear layers that read the same input (a transformer's queries, keys and values) are one
product (`fused_linears`): their weights are joined into one fixed operand, masked and
opened once like any other, so a batch opens x - A once and truncates once for all of
them, where it would open and truncate once for each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from collections.abc import Callable

import torch

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from smpc.protocols.csprng import AesCtrGenerator, derive
from smpc.protocols.ring_matmul import FixedMatrix

# the products that read a weight as their fixed operand: a linear layer is x @ W^T, a
# lookup on one-hot ids onehot @ T, a convolution x * W
PRODUCTS: dict[str, Callable[..., torch.Tensor]] = {
    "matmul": torch.matmul,
    "conv1d": torch.conv1d,
    "conv2d": torch.conv2d,
}


@dataclass
class FixedWeight:
    """A secret weight as the fixed operand of products: the weight itself (a CrypTensor,
    for every other use), this party's share of its session mask B, and D = W - B
    (opened once, public to the parties)."""

    name: str
    tensor: Any  # crypten.CrypTensor
    mask: torch.Tensor | None  # this party's share of B (int64, the weight's shape)
    opened: torch.Tensor | None  # D = W - B (int64, the weight's shape)
    # the matmul operands made from them (transposed or not), in ring_matmul's form
    _matrices: dict[tuple[str, bool], FixedMatrix] = field(default_factory=dict, repr=False)
    shape: torch.Size = field(init=False)

    def __post_init__(self) -> None:
        if self.mask is None:  # made with both; only later dropped
            raise RuntimeError(f"{self.name}: a fixed weight made without its mask")
        self.shape = self.mask.size()

    def size(self) -> torch.Size:
        return self.shape

    def matrix(self, which: str, transposed: bool) -> FixedMatrix:
        """The mask share B_i ("mask"), D ("opened") or B_i + D ("mask plus opened") as
        the right operand of a matmul."""
        key = (which, transposed)
        if key not in self._matrices:
            if self.mask is None:
                raise RuntimeError(f"{self.name}: its masks were kept only as the matmul operands the program reads")
            opened = self.opened
            if opened is None:  # dropped together with the mask
                raise RuntimeError(f"{self.name}: its masks were kept only as the matmul operands the program reads")
            value = {"mask": self.mask, "opened": opened}.get(which)
            value = self.mask + opened if value is None else value
            self._matrices[key] = FixedMatrix(operand(value, transposed).contiguous())
        return self._matrices[key]


# the ops (smpc.model.ops) that take a FixedWeight, and the position of the weight among their
# arguments; every other op gets the plain CrypTensor (`unwrap`)
FIXED_OPERAND = {
    torch.ops.aten.linear.default: 1,
    torch.ops.aten.conv1d.default: 1,
    torch.ops.aten.conv2d.default: 1,
    torch.ops.aten.embedding.default: 0,
}


@dataclass(frozen=True)
class FusedLinears:
    """Linear layers of a program that read the same input with secret weights, computed
    as one product against their weights joined along the output features: `name` is
    the joined weight's (the members' names joined by "+"), `nodes` the layers' nodes in
    graph order, `members` their weights' names and `sizes` their output features."""

    name: str
    nodes: tuple[torch.fx.Node, ...]
    members: tuple[str, ...]
    sizes: tuple[int, ...]


def _secret_placeholder(program: Any, arg: Any) -> str | None:
    # the secret parameter a node argument reads, if it is one (a placeholder read back
    # from program.json may be renamed: see execute; its target keeps the parameter's name)
    if not isinstance(arg, torch.fx.Node) or arg.op != "placeholder":
        return None
    name = arg.name if arg.name in program.secret else str(arg.target)
    return name if name in program.secret else None


def fused_linears(program: Any) -> list[FusedLinears]:
    """The groups of two or more linear layers of `program` that read the same input node
    with 2-D secret weights (queries, keys and values): each is computed as one product."""
    by_input: dict[torch.fx.Node, list[tuple[torch.fx.Node, str]]] = {}
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default or node.kwargs:
            continue
        x = node.args[0]
        name = _secret_placeholder(program, node.args[1]) if len(node.args) > 1 else None
        if isinstance(x, torch.fx.Node) and name is not None and program.secret[name].dim() == 2:
            by_input.setdefault(x, []).append((node, name))
    groups = []
    for readers in by_input.values():
        if len(readers) < 2 or len({name for _, name in readers}) < len(readers):
            continue  # one layer, or one weight read twice: nothing to join
        names = tuple(name for _, name in readers)
        groups.append(
            FusedLinears(
                "+".join(names),
                tuple(node for node, _ in readers),
                names,
                tuple(int(program.secret[n].shape[0]) for n in names),
            )
        )
    return groups


def fused_params(program: Any, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the joined weight of every group of `fused_linears` (its shares the
    members' joined: a local step), each member now a view into it (no second copy)."""
    import crypten

    out = dict(params)
    for group in fused_linears(program):
        if not all(n in params for n in group.members):
            continue
        joined = out[group.name] = crypten.cat([params[n] for n in group.members], dim=0)
        start = 0
        for name, size in zip(group.members, group.sizes):
            out[name] = joined.narrow(0, start, size)
            start += size
    return out


def fixed_names(program: Any) -> list[str]:
    """The secret parameters of `program` that are the fixed operand of a product: the
    weight of a linear layer or a convolution, the table of a lookup (by secret ids a
    product; by public ones a gather, whose mask is opened all the same, once); for
    linear layers that read the same input, their joined weight (`fused_linears`)."""
    groups = fused_linears(program)
    joined = {node for group in groups for node in group.nodes}
    names = {group.name for group in groups}
    for node in program.graph.nodes:
        if node.op != "call_function" or node in joined:
            continue
        position = FIXED_OPERAND.get(node.target)
        if position is None or len(node.args) <= position:
            continue
        name = _secret_placeholder(program, node.args[position])
        if name is not None:
            names.add(name)
    return sorted(names)


def mask_key(seed: bytes, name: str) -> bytes:
    """The key of party i's share of the session mask of weight `name`, from the key it
    shares with the dealer (both sides derive it; a session's seeds are fresh)."""
    return derive(seed, "fixed operand mask", name)


def mask_share(seed: bytes, name: str, shape: torch.Size) -> torch.Tensor:
    """Party i's share B_i of the session mask of weight `name`."""
    return AesCtrGenerator(mask_key(seed, name)).ring(tuple(shape))


def open_masks(program: Any, params: dict[str, Any], seed: bytes) -> dict[str, Any]:
    """Once per session, at every party: each fixed operand's D = W - B opened (one round
    for all), and the parameter wrapped as a FixedWeight."""
    import crypten.communicator as comm

    params = fused_params(program, params)
    names = [n for n in fixed_names(program) if n in params]
    if not names:
        return params
    masks = {n: mask_share(seed, n, params[n].size()) for n in names}
    flat = torch.cat([(params[n].share - masks[n]).reshape(-1) for n in names])
    opened = comm.get().all_reduce(flat)  # the one round: every D at once
    out = dict(params)
    offset = 0
    rank = comm.get().get_rank()
    uses = _uses(program)
    for n in names:
        count = masks[n].numel()
        read = uses.get(n, {None})
        d = opened[offset : offset + count].view(masks[n].shape)
        offset += count
        # a D kept as itself is a copy: a view would keep every weight's D alive
        out[n] = weight = FixedWeight(n, params[n], masks[n], d.clone() if None in read else d)
        for transposed in cast(set[bool], read - {None}):  # the matmul operands, made now
            weight.matrix("mask plus opened" if rank == 0 else "mask", transposed)
            weight.matrix("opened", transposed)
        if None not in read:  # only matmuls read it: B_i and D live on as their operands
            weight.mask = weight.opened = None
    return out


def _uses(program: Any) -> dict[str, set[bool | None]]:
    # how each weight is read as a fixed operand: by a matmul (a linear layer reads W^T:
    # True; a lookup the table: False), or by a convolution (None)
    groups = fused_linears(program)
    joined = {node for group in groups for node in group.nodes}
    uses: dict[str, set[bool | None]] = {group.name: {True} for group in groups}
    matmuls = {torch.ops.aten.linear.default: True, torch.ops.aten.embedding.default: False}
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target not in FIXED_OPERAND or node in joined:
            continue
        position = FIXED_OPERAND[node.target]
        name = _secret_placeholder(program, node.args[position]) if len(node.args) > position else None
        if name is not None:
            uses.setdefault(name, set()).add(matmuls.get(node.target))
    return uses


def unwrap(value: Any) -> Any:
    """The CrypTensor of a FixedWeight (for any use but a fixed-operand product)."""
    return value.tensor if isinstance(value, FixedWeight) else value


def request(
    op: str, x_size: torch.Size, weight: FixedWeight, transposed: bool
) -> tuple[str, torch.Size, str, torch.Size, bool]:
    """The dealer request of one product (its args; the op's keyword arguments go beside):
    op, x's size, the weight's name, its size, transposed."""
    return (op, torch.Size(x_size), weight.name, torch.Size(weight.size()), transposed)


def operand(value: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The weight side of a product as the op reads it (W^T for a linear layer)."""
    return value.t() if transposed else value


def product(op: str, x: Any, weight: FixedWeight, transposed: bool = False, **kwargs: Any) -> Any:
    """x op W (op: matmul, conv1d or conv2d; W^T with `transposed`) for a secret x and a
    fixed weight: one opening of x - A, then the truncation of the product's scale."""
    import crypten
    import crypten.communicator as comm
    from crypten.mpc import MPCTensor

    from smpc import meter

    args = request(op, x.size(), weight, transposed)
    with meter.piece("products") as piece:
        provider = crypten.mpc.get_default_provider()
        a, c = provider.fixed_pair(args, kwargs)
        e = comm.get().all_reduce(x.share - a)  # the one round: E = x - A
        # the dealer's shape-only run needs the product's shape alone, which C has
        if getattr(provider, "tracing", False):
            z = c
        else:
            z = local_product(comm.get().get_rank(), op, e, a, c, weight, transposed, kwargs)
        piece.elements = z.numel()
    out = MPCTensor.from_shares(z, precision=x.encoder._precision_bits)
    out._tensor.div_(weight.tensor.encoder.scale)  # x at scale 2^p times W at 2^p: back to 2^p
    return out


def local_product(
    rank: int,
    op: str,
    e: torch.Tensor,
    a: torch.Tensor,
    c: torch.Tensor,
    weight: FixedWeight,
    transposed: bool,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """Party `rank`'s share of x op W (at the product's scale) from the opened E = x - A,
    its shares of A and C = A op B, and the weight's mask share and D = W - B:
    E op B_i + A_i op D + C_i, plus E op D at party 0."""
    if op == "matmul":  # with the operands kept in ring_matmul's fastest form
        # party 0 adds E op D: E op (B_0 + D) is one product instead of two
        fixed = weight.matrix("mask plus opened" if rank == 0 else "mask", transposed)
        return fixed.rmatmul(e) + weight.matrix("opened", transposed).rmatmul(a) + c
    f = PRODUCTS[op]
    if weight.mask is None or weight.opened is None:  # kept for every weight a convolution reads
        raise RuntimeError(f"{weight.name}: its masks were kept only as the matmul operands the program reads")
    b, d = operand(weight.mask, transposed), operand(weight.opened, transposed)
    z = f(e, b, **kwargs) + f(a, d, **kwargs) + c
    return z + f(e, d, **kwargs) if rank == 0 else z
