"""`protocol.comparisons: fss` in whole runs: the dealer process makes the keys, both
parties read them, and the bytes and rounds fall against CrypTen's circuits."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import write_config
from launch import load_config, run
from smpc.errors import ConfigError


def test_fss_sends_a_tenth_of_the_bytes_in_under_half_the_rounds(tmp_path):
    # the demo's model and batch size (digits CNN, 60 rows a batch), on two batches,
    # against upstream CrypTen (circuits, local truncation) and circuits with the
    # dealer's truncation (the default with a dealer and two parties)
    runs = {}
    for mode, protocol in {
        "circuits": {"comparisons": "circuits", "truncation": "local"},
        "circuits-dealer-truncation": {"comparisons": "circuits"},
        "fss": {"comparisons": "fss"},
    }.items():
        folder = tmp_path / mode
        folder.mkdir()
        config = write_config(folder, samples=120, batch_size=60, dealer=True, protocol=protocol)
        runs[mode] = run(load_config(config), echo=False)
    fss, circuits, faithful = runs["fss"], runs["circuits"], runs["circuits-dealer-truncation"]
    alice, before = fss.parties["alice"], circuits.parties["alice"]
    assert fss.comparisons == "fss" and circuits.comparisons == "circuits"
    assert (circuits.truncation, faithful.truncation, fss.truncation) == ("local", "dealer", "dealer")
    # the dealer's truncation adds exactly its own bytes and rounds to the same circuits
    same = faithful.parties["alice"]
    assert same["comparisons_bytes"] == before["comparisons_bytes"] and same["truncations_rounds"] > 0
    assert same["rounds"] == before["rounds"] + same["truncations_rounds"]
    assert same["bytes_sent"] == before["bytes_sent"] + same["truncations_bytes"]
    assert faithful.agreement >= 0.999
    assert alice["bytes_sent"] <= 0.2 * before["bytes_sent"], (alice["bytes_sent"], before["bytes_sent"])
    # per batch (the set-up's rounds, e.g. the weights' masks opened once, are the same)
    online = [sum(layer["rounds"] for layer in p["layers"] if layer["layer"] != "<setup>") for p in (alice, before)]
    assert online[0] <= 0.5 * online[1], online
    assert fss.agreement >= 0.999 and fss.accuracy_mpc >= 0.97
    # the split: with circuits, comparisons are most of the bytes; with fss, a sliver
    assert before["comparisons_bytes"] > 0.8 * before["bytes_sent"]
    assert 0 < alice["comparisons_bytes"] < 0.5 * alice["bytes_sent"]
    assert alice["truncations_rounds"] > 0 and before["truncations_rounds"] == 0
    # each party received its keys; ReLUs of the digits CNN: 3136 per row
    for name in ("alice", "bob"):
        party = fss.parties[name]
        assert party["gates"]["relu"] == 120 * 3136
        assert 1500 < party["key_bytes_per_comparison"] < 2200
        assert party["key_bytes"] > party["gates"]["relu"] * 1500
        # the profile books every key to the op that used it (bob gets keys alone, no corrections)
        rows = party["layers"]
        used = sum(row["key_bytes"] for row in rows)
        assert used == party["key_bytes"] if name == "bob" else used > party["key_bytes"]
        relu_keys = sum(row["key_bytes"] for row in rows if row["op"] == "relu: comparisons")
        assert relu_keys == party["key_bytes"] - sum(
            row["key_bytes"] for row in rows if row["op"].endswith("truncations")
        )
        assert [row["layer"] for row in rows].count("<dealer material>") == 1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"randomness": "local"}, "protocol.comparisons: fss needs randomness: dealer"),
        (
            {"helpers": 1},
            "protocol.comparisons: fss needs exactly 2 parties (its keys are two-party function secret sharing), got 3",
        ),
        (
            {"truncation": "local"},
            "protocol.truncation: local cannot go with comparisons: fss (its truncation is the dealer's); leave it unset",
        ),
        (
            {"comparisons": "circuits", "truncation": "dealer", "randomness": "local"},
            "protocol.truncation: dealer needs randomness: dealer (the dealer makes the masks)",
        ),
        (
            {"comparisons": "circuits", "truncation": "dealer", "helpers": 1},
            "protocol.truncation: dealer is for exactly 2 parties, got 3 (with more, CrypTen's truncation is already exact to one unit); leave it unset",
        ),
    ],
)
def test_fss_settings_it_cannot_run_are_refused_by_name(tmp_path, changes, message):
    helpers = changes.pop("helpers", 0)
    dealer = changes.pop("randomness", "dealer") == "dealer"
    protocol = {"comparisons": "fss", **changes}
    config = write_config(tmp_path, samples=8, batch_size=8, helpers=helpers, dealer=dealer, protocol=protocol)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(config)


def test_the_truncation_is_the_dealers_wherever_it_can_make_it(tmp_path):
    from smpc.config import load_config as load

    root = Path(__file__).resolve().parent.parent / "configs"
    assert load(root / "local-2pc.yaml").plan.truncation == "dealer"  # two parties and a dealer
    assert load(root / "local-2pc-fss.yaml").plan.truncation == "dealer"
    assert load(root / "local-3pc.yaml").plan.truncation == "local"  # CrypTen's own, exact to a unit with 3+
    assert load(root / "serve-2pc.yaml").plan.truncation == "dealer"  # a service as a one-off run
    assert load(write_config(tmp_path, samples=8, batch_size=8)).plan.truncation == "local"  # no dealer
