"""Narrow FSS keys: a calibrated op's comparisons run on the bits its values need
(smpc.model.calibrate.ComparisonWidths), on real party processes and the dealer; an
uncalibrated op keeps the ring's 64; the parties and the dealer agree on the widths.
The gates themselves are tested on the edges of every width in test_fss.py."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import smpc
from harness import write_program_config
from smpc.runs.runner import run
from smpc import agreement, artifacts
from smpc.config import load_config
from smpc.errors import ConversionError, PartyError
from smpc.model import calibrate, owner, pack


class Block(nn.Module):
    """GELU, a softmax and a LayerNorm (the approximations whose comparisons narrow), then
    ReLU and max pooling (exact ops that compare)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        with torch.no_grad():
            self.fc.weight.mul_(4.0)

    def forward(self, x):
        h = nn.functional.gelu(self.fc(x))
        r = torch.relu(self.fc(x) * 8)  # ReLU's inputs to +-120, a width of its own
        pooled = nn.functional.max_pool2d(r.reshape(-1, 1, 2, 4), 2).flatten(1)
        return torch.cat([torch.softmax(h, dim=-1), self.norm(h), r, pooled], dim=-1)


def _model(tmp_path: Path, calibrated: bool) -> tuple[Path, Path]:
    rows = torch.linspace(-2, 2, 48).reshape(8, 6)
    directory = tmp_path / ("calibrated" if calibrated else "plain")
    smpc.pack(Block().eval(), (rows[:4],), directory, buckets=False)
    data = tmp_path / "rows.safetensors"
    artifacts.save_inputs(data, {"x": rows})
    if calibrated:
        owner.calibrate_directory(directory, data)
    return directory, data


def _config(tmp_path: Path, directory: Path, data: Path, **protocol) -> Path:
    path = write_program_config(
        tmp_path, directory, data, batch_size=4, dealer=True, protocol={"comparisons": "fss", **protocol}
    )
    named = tmp_path / f"{directory.name}-{len(protocol)}.yaml"
    shutil.move(path, named)
    return named


def test_widths_follow_the_calibrated_magnitudes_with_headroom(tmp_path):
    directory, data = _model(tmp_path, calibrated=True)
    config = load_config(_config(tmp_path, directory, data))
    program = pack.build_program(config)
    widths = calibrate.comparison_widths(config, program)
    entries = {e.op: e for e in calibrate.load(directory).ops}
    nodes = {n.target.__name__.split(".")[0]: n for n in program.graph.nodes if n.op == "call_function"}
    gelu_reach = max(abs(entries["gelu"].low), abs(entries["gelu"].high)) * 2  # the calibration's margin
    expected = math.ceil(math.log2((gelu_reach + 16) * 2**16)) + 1 + calibrate.HEADROOM_BITS
    assert widths(nodes["gelu"], (torch.zeros(4, 8),)) == expected < 32
    # a LayerNorm compares its variance (held 2^8 finer) with 2^24 whatever its inputs:
    # 2^32 in real units, 2^48 at 16 bits
    assert widths(nodes["layer_norm"], (torch.zeros(4, 8),)) == 48 + 1 + calibrate.HEADROOM_BITS
    assert widths(nodes["linear"] if "linear" in nodes else nodes["addmm"], (torch.zeros(4, 6),)) is None
    # ReLU compares its input, max pooling the differences of its window (twice the reach)
    relu_reach = max(abs(entries["relu"].low), abs(entries["relu"].high)) * 2
    assert relu_reach > 60  # the calibration measured ReLU's own input
    relu_bits = math.ceil(math.log2(relu_reach * 2**16)) + 1 + calibrate.HEADROOM_BITS
    assert widths(nodes["relu"], (torch.zeros(4, 8),)) == relu_bits < 32
    pool_reach = max(abs(entries["max_pool2d"].low), abs(entries["max_pool2d"].high)) * 2
    pool_bits = math.ceil(math.log2(2 * pool_reach * 2**16)) + 1 + calibrate.HEADROOM_BITS
    assert widths(nodes["max_pool2d"], (torch.zeros(4, 1, 2, 4),)) == pool_bits < 32
    # no calibration, or circuits: the ring's width everywhere
    plain, _ = _model(tmp_path, calibrated=False)
    assert calibrate.comparison_widths(load_config(_config(tmp_path, plain, data)), program) is None
    circuits = load_config(_config(tmp_path, directory, data, comparisons="circuits"))
    assert calibrate.comparison_widths(circuits, program) is None


def test_a_calibrated_run_sends_narrower_keys_stays_right_within_the_headroom_and_stops_by_name_past_it(tmp_path):
    plain, data = _model(tmp_path, calibrated=False)
    directory, _ = _model(tmp_path, calibrated=True)
    rows = artifacts.load_inputs(data, pack.build_program(load_config(_config(tmp_path, directory, data))).inputs)
    far = (
        tmp_path / "far.safetensors"
    )  # GELU inputs 3x what calibration saw: past its margin of 2, inside the headroom of 4
    artifacts.save_inputs(far, {"x": rows.inputs["x"] * 3})
    reports = {
        "wide": run(load_config(_config(tmp_path, plain, far)), echo=False),
        "narrow": run(load_config(_config(tmp_path, directory, far)), echo=False),
    }
    for report in reports.values():
        assert min(o["min_cosine"] for o in report.outputs.values()) > 0.999
    wide, narrow = (reports[k].parties["bob"] for k in ("wide", "narrow"))
    assert set(wide["comparison_widths"]) == {"64"}
    assert "64" not in narrow["comparison_widths"]  # every comparison here is inside a calibrated op
    assert (
        sum(w["comparisons"] for w in narrow["comparison_widths"].values())
        == wide["comparison_widths"]["64"]["comparisons"]
    )
    per_wide = wide["comparison_widths"]["64"]["key_bytes_per_comparison"]
    for bits, w in narrow["comparison_widths"].items():
        # a key shrinks with its width (its levels), whatever mix of ops the model has:
        # GELU's at 24-25 bits came out at 0.36-0.43x the 64-bit key, a LayerNorm's at 51 at 0.77x
        assert w["key_bytes_per_comparison"] < per_wide * (int(bits) + 8) / 64, (bits, w, per_wide)
        assert int(bits) <= 51  # a LayerNorm's: thresholds up to 2^32 (2^24 held 2^8 finer) at 16 bits
    assert narrow["key_bytes"] == sum(w["key_bytes"] for w in narrow["comparison_widths"].values())
    assert narrow["key_bytes"] < 0.7 * wide["key_bytes"]
    assert reports["narrow"].dealer["bytes_sent"] < reports["wide"].dealer["bytes_sent"]
    # with range checks, the same values stop the run before any comparison could be wrong
    checked = _config(tmp_path, directory, far, range_checks=True)
    with pytest.raises(PartyError, match=r"range check failed: .*\(gelu\): magnitude out of"):
        run(load_config(checked), echo=False)


def test_parties_with_different_calibrations_disagree_on_the_widths_by_name(tmp_path):
    directory, data = _model(tmp_path, calibrated=True)
    other = tmp_path / "other"
    shutil.copytree(directory, other)
    calibration = calibrate.load(other)
    wider = [
        e if e.op != "gelu" else type(e)(e.node, e.layer, e.op, e.quantity, e.low * 100, e.high * 100)
        for e in calibration.ops
    ]
    calibrate.save(
        type(calibration)(
            calibration.architecture, calibration.rows, calibration.margin, tuple(wider), calibration.largest
        ),
        other,
    )
    path = _config(tmp_path, directory, data)
    doc = yaml.safe_load(path.read_text())  # the same config but for the folder bob holds
    doc["model"]["program"] = doc["parties"][1]["weights"] = str(other)
    (tmp_path / "theirs.yaml").write_text(yaml.safe_dump(doc))
    mine, theirs = load_config(path), load_config(tmp_path / "theirs.yaml")
    fields = [agreement.fields(c, pack.build_program(c)) for c in (mine, theirs)]
    assert agreement.first_difference(*fields) == "protocol.comparison_widths"


def test_a_calibration_without_relu_entries_still_fits_and_leaves_relu_and_pooling_wide(tmp_path):
    # calibrations written before ReLU and max pooling were measured: accepted as they are;
    # those ops keep the ring's width and get no range check
    directory, data = _model(tmp_path, calibrated=True)
    calibration = calibrate.load(directory)
    older = tuple(e for e in calibration.ops if e.op not in ("relu", "max_pool2d"))
    assert len(older) < len(calibration.ops)
    calibrate.save(
        type(calibration)(calibration.architecture, calibration.rows, calibration.margin, older, calibration.largest),
        directory,
    )
    config = load_config(_config(tmp_path, directory, data, range_checks=True))
    program = pack.build_program(config)
    calibrate.check(calibrate.load(directory), program, 16, "here")
    nodes = {n.target.__name__.split(".")[0]: n for n in program.graph.nodes if n.op == "call_function"}
    widths = calibrate.comparison_widths(config, program)
    assert widths(nodes["relu"], (torch.zeros(4, 8),)) is None
    assert widths(nodes["gelu"], (torch.zeros(4, 8),)) is not None
    bounds = calibrate.check_bounds(program, 16, calibrate.load(directory))
    assert nodes["gelu"].name in bounds and nodes["relu"].name not in bounds
    # a new calibration missing one of them is another architecture's
    partial = tuple(e for e in calibration.ops if e.op != "max_pool2d")
    with pytest.raises(ConversionError, match="calibrated for another architecture"):
        calibrate.check(
            type(calibration)(
                calibration.architecture, calibration.rows, calibration.margin, partial, calibration.largest
            ),
            program,
            16,
            "here",
        )


def test_the_fss_demo_runs_its_committed_calibrated_program_on_narrow_relus(tmp_path):
    # configs/local-2pc-fss.yaml reads models/digits-cnn, which models/pack_digits_cnn.py
    # makes (deterministically: the same bytes again); its ReLUs compare on 23-26 bits
    import runpy

    root = Path(__file__).resolve().parent.parent
    committed = root / "models" / "digits-cnn"
    script = runpy.run_path(str(root / "models" / "pack_digits_cnn.py"))
    script["main"](tmp_path / "again")
    assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in (tmp_path / "again").iterdir())
    for made in (tmp_path / "again").iterdir():
        assert made.read_bytes() == (committed / made.name).read_bytes(), made.name
    config = load_config(root / "configs" / "local-2pc-fss.yaml")
    program = pack.build_program(config)
    widths = calibrate.comparison_widths(config, program)
    relus = [n for n in program.graph.nodes if n.op == "call_function" and "relu" in str(n.target)]
    assert len(relus) == 3
    bits = [widths(n, (torch.zeros(1),)) for n in relus]
    assert all(b is not None and 20 <= b <= 28 for b in bits), bits
