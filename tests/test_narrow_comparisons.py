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
from smpc.errors import PartyError
from smpc.model import calibrate, owner, pack


class Block(nn.Module):
    """GELU, a softmax and a LayerNorm: the three families whose comparisons narrow."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        with torch.no_grad():
            self.fc.weight.mul_(4.0)

    def forward(self, x):
        h = nn.functional.gelu(self.fc(x))
        return torch.cat([torch.softmax(h, dim=-1), self.norm(h)], dim=-1)


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
