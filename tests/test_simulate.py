"""Real models end to end: smpc.simulate, a model that exists only in a user's script run
from its packed directory, and a run whose answer is wrong failing by name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness import write_program_config
from hf_cases import SMALL, realistic_bert_scaling, text_inputs

SMPC = [str(Path(sys.executable).with_name("smpc"))]


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_simulate_bert_on_a_padded_batch_matches_plaintext(capsys):
    pytest.importorskip("transformers")
    import smpc
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = realistic_bert_scaling(BertModel(BertConfig(**SMALL))).eval()
    ids, mask = text_inputs()
    result = smpc.simulate(model, (ids, mask), parties=2, randomness="dealer", profile=True)
    # the cost profile, printed and in the report: the approximations' steps are rows of their own
    printed = capsys.readouterr().out
    assert "cost profile of party" in printed and "by kind of work: " in printed
    for name, party in result.report.parties.items():
        rows = party["layers"]
        assert sum(row["bytes_sent"] for row in rows) == party["bytes_sent"]
        ops = {row["op"] for row in rows}
        for op in (
            "softmax: max: comparisons",
            "softmax: exp: polynomial: products",
            "softmax: reciprocal: newton: products",
            "layer_norm: levels: comparisons",
            "layer_norm: newton: products",
            "gelu: piecewise: comparisons",
            "linear: products",
            "linear: truncations",
            "embedding: products",
        ):
            assert op in ops, (op, sorted(ops))
        assert all(row["bytes_sent"] > 0 for row in rows if row["op"].endswith(": products"))
        if name == "bob":  # bob (party 1) receives no corrections: the dealer's material is alice's
            assert all(row["key_bytes"] == 0 for row in rows)
        else:
            assert sum(row["key_bytes"] for row in rows) == party["dealer_bytes_received"]
    # the model's own output structure, with its fields
    assert type(result.outputs).__name__ == "BaseModelOutputWithPoolingAndCrossAttentions"
    got, want = result.outputs.last_hidden_state, result.plain.last_hidden_state
    cosine = torch.nn.functional.cosine_similarity(got.double(), want.double(), dim=-1)[mask.bool()]
    assert float(cosine.min()) >= 0.999
    assert result.cosine >= 0.999 and set(result.report.outputs) == {"last_hidden_state", "pooler_output"}
    assert result.bytes_sent["alice"] > 0 and result.rounds["bob"] > 0 and result.online_s > 0


def test_simulate_passes_the_comparison_protocol_and_the_op_timeout():
    # nn.Sequential names its argument `input`: torch.fx renames that placeholder when the
    # graph is read back from program.json (the dealer and every party read it so)
    import smpc

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    x = torch.randn(8, 6) * 3
    keep = Path(os.environ.get("TMPDIR", "/tmp")) / f"smpc-simulate-fss-{os.getpid()}"
    try:
        result = smpc.simulate(model, x, comparisons="fss", op_timeout_s=20, keep=keep)
        config = (keep / "config.yaml").read_text()
    finally:
        import shutil

        shutil.rmtree(keep, ignore_errors=True)
    assert "comparisons: fss" in config and "op_s: 20" in config
    assert result.report.comparisons == "fss" and result.report.parties["alice"]["gates"]["relu"] > 0
    assert torch.allclose(result.outputs, result.plain, atol=0.01)


def test_simulate_prints_the_run_phases_unless_quiet(capsys):
    import smpc

    torch.manual_seed(0)
    model, x = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval(), torch.randn(2, 4)
    smpc.simulate(model, x, randomness="local")
    lines = capsys.readouterr().out.splitlines()
    for name in ("alice", "bob"):  # each process's phases, as `smpc launch` relays them
        for phase in ("converted the model", "connected to every party: ", "settings agreed: ", "online phase: "):
            assert any(line.startswith(f"[{name}] {phase}") for line in lines), (name, phase, lines)
    smpc.simulate(model, x, randomness="local", quiet=True)
    assert capsys.readouterr().out == ""


USER_SCRIPT = """
import torch
from torch import nn
import smpc


class MyNet(nn.Module):  # exists only in this script
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(6, 16)
        self.norm = nn.LayerNorm(16)
        self.down = nn.Linear(16, 3)

    def forward(self, x):
        return self.down(nn.functional.gelu(self.norm(self.up(x) * 20)))


torch.manual_seed(0)
model = MyNet().eval()
x = torch.randn(5, 6)
smpc.pack(model, x, "{model_dir}")
from smpc import artifacts
from pathlib import Path
artifacts.save_inputs(Path("{data}"), {{"x": x}})
with torch.no_grad():
    torch.save(model(x), "{expected}")
"""


def test_a_model_defined_only_in_a_script_runs_from_its_packed_directory(tmp_path):
    author = tmp_path / "author"
    author.mkdir()
    model_dir, data, expected = tmp_path / "mynet", tmp_path / "data.safetensors", tmp_path / "expected.pt"
    script = author / "my_model.py"
    script.write_text(textwrap.dedent(USER_SCRIPT.format(model_dir=model_dir, data=data, expected=expected)))
    subprocess.run([sys.executable, str(script)], cwd=author, check=True, env=_clean_env(), timeout=300)
    script.unlink()
    author.rmdir()  # no copy of the code anywhere: the parties build the model from data
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "buckets",
        "constants.safetensors",
        "manifest.json",
        "program.json",
        "weights.safetensors",
    ]
    # packed for every batch up to its 5 rows: 1, 2 and 4 beside 5, on the same weights
    assert sorted(p.name for p in (model_dir / "buckets").iterdir()) == ["r1", "r2", "r4"]
    config = write_program_config(tmp_path, model_dir, data, batch_size=5)
    done = subprocess.run(
        SMPC + ["launch", str(config), "--quiet"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "output output       worst cosine to plaintext" in done.stdout
    from smpc import artifacts

    revealed = artifacts.load_output_fields(tmp_path / "run" / "alice.output.safetensors")["output"]
    torch.testing.assert_close(revealed, torch.load(expected), atol=2e-2, rtol=0)


class _Blows(torch.nn.Module):
    """Plaintext is fine; on shares the product of 1e12-scaled weights wraps the ring."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
        with torch.no_grad():
            self.fc.weight.mul_(1e12)

    def forward(self, x):
        return self.fc(x) * 1e-12


def test_an_out_of_range_run_exits_non_zero_naming_the_output_and_figure(tmp_path):
    import smpc
    from smpc import artifacts

    torch.manual_seed(0)
    x = torch.randn(4, 8)
    smpc.pack(_Blows().eval(), x, tmp_path / "blows")
    artifacts.save_inputs(tmp_path / "data.safetensors", {"x": x})
    config = write_program_config(tmp_path, tmp_path / "blows", tmp_path / "data.safetensors", batch_size=4)
    done = subprocess.run(
        SMPC + ["launch", str(config), "--quiet", "--report", str(tmp_path / "report.json")],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("error: fidelity check failed: output output: worst cosine to plaintext ")
    assert "< fidelity.min_cosine 0.99" in lines[0] and "likely fc Linear: values reach" in lines[0]
    import json

    assert json.loads((tmp_path / "report.json").read_text())["fidelity"].startswith("fidelity check failed")


def test_smpc_model_pack_converts_a_save_pretrained_directory(tmp_path):
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertModel

    from smpc.model import program_format

    BertModel(BertConfig(**SMALL)).save_pretrained(tmp_path / "bert")
    done = subprocess.run(
        SMPC
        + [
            "model",
            "pack",
            str(tmp_path / "bert"),
            "--out",
            str(tmp_path / "packed"),
            "--batch",
            "2",
            "--seq-len",
            "8",
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "packed"
    assert done.stdout == (
        f"packed {out} (2 shapes)\n"
        "  batch sizes:      1, 2 rows\n"
        "  sequence lengths: 8 tokens\n"
        f"next: sign it with the owner's key: smpc model sign {out} --key OWNER.key\n"
    )
    program = program_format.load(tmp_path / "packed")
    assert [(s.name, s.shape, s.kind) for s in program.inputs] == [
        ("input_ids", (2, 8), "ids"),
        ("attention_mask", (2, 8), "binary"),
    ]
    (tmp_path / "bert" / "model.safetensors").unlink()
    done = subprocess.run(
        SMPC + ["model", "pack", str(tmp_path / "bert"), "--out", str(tmp_path / "again")],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == f"error: {tmp_path / 'bert'}: no model.safetensors (the weights of a save_pretrained directory)"
    )
