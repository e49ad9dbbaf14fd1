"""Config schema: the shipped config loads; every bad input gets its exact message."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from smpc.config import load_config, parse_config
from smpc.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "configs" / "local-2pc.yaml"
BASE = yaml.safe_load(SHIPPED.read_text())


def test_shipped_config_loads_and_resolves_paths():
    config = load_config(SHIPPED)
    assert config.names == ["alice", "bob"]
    assert config.model_owner.name == "bob" and [p.name for p in config.data_owners] == ["alice"]
    assert config.model_owner.weights == ROOT / "models" / "digits_cnn.safetensors"
    assert config.data_owners[0].data == ROOT / "data" / "digits-test.safetensors"
    assert [(p.host, p.port) for p in config.parties] == [("127.0.0.1", 29610), ("127.0.0.1", 29611)]
    assert config.rank_of("bob") == 1


def _set(path, value):
    def mutate(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        doc[last] = value

    return mutate


def _drop(path):
    def mutate(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        del doc[last]

    return mutate


BAD = [
    (_set(["parties", 1, "port"], "abc"), "x.yaml: parties[1].port: expected an integer, got 'abc'"),
    (_set(["parties", 1, "port"], 70000), "x.yaml: parties[1].port: expected a value <= 65535, got 70000"),
    (_set(["parties", 1, "port"], 0), "x.yaml: parties[1].port: expected a value >= 1, got 0"),
    (_set(["bogus"], 1), "x.yaml: bogus: unknown key"),
    (_set(["batch_sise"], 4), "x.yaml: batch_sise: unknown key; did you mean batch_size?"),
    (
        _set(["serving"], {"clients": ["analyst"], "max_batchs": 8}),
        "x.yaml: serving.max_batchs: unknown key; did you mean max_batch?",
    ),
    (_set(["parties", 0, "rolez"], []), "x.yaml: parties[0].rolez: unknown key; did you mean roles?"),
    (_set(["model", "inputshape"], [1]), "x.yaml: model.inputshape: unknown key; did you mean input_shape?"),
    (_drop(["parties", 0, "host"]), "x.yaml: parties[0].host: required key is missing"),
    (
        _drop(["model", "architecture"]),
        "x.yaml: model: expected exactly one of architecture or program (a packed model directory)",
    ),
    (
        _set(["model", "program"], "models/x"),
        "x.yaml: model: expected exactly one of architecture or program (a packed model directory)",
    ),
    (_drop(["model", "input_shape"]), "x.yaml: model: input_shape is required with architecture"),
    (
        lambda d: (d["model"].pop("architecture"), d["model"].__setitem__("program", "m")),
        "x.yaml: model: input_shape is not allowed with program (the program holds its input shapes)",
    ),
    (
        lambda d: d.__setitem__("fidelity", {"min_cosine": 2}),
        "x.yaml: fidelity.min_cosine: expected a value <= 1.0, got 2",
    ),
    (_drop(["model"]), "x.yaml: model: required key is missing"),
    (
        _set(["parties", 0, "roles"], ["data_owner", "boss"]),
        "x.yaml: parties[0].roles[1]: expected 'model_owner', 'data_owner' or 'output', got 'boss'",
    ),
    (
        _set(["parties", 0, "roles"], ["data_owner", "output", "output"]),
        "x.yaml: parties[0].roles: roles are listed twice: ['data_owner', 'output', 'output']",
    ),
    (_set(["parties", 1, "name"], "alice"), "x.yaml: parties: party name 'alice' is used more than once"),
    (
        _set(["parties", 1, "name"], "Bob Smith"),
        "x.yaml: parties[1].name: expected a lower-case name (letters, digits, '-', '_'), got 'Bob Smith'",
    ),
    (_set(["parties", 1, "port"], 29610), "x.yaml: parties: address 127.0.0.1:29610 is used by more than one party"),
    (_drop(["dealer"]), "x.yaml: dealer: required when randomness is 'dealer'"),
    (_set(["randomness"], "ttp"), "x.yaml: randomness: expected 'local', 'dealer' or 'two-party', got 'ttp'"),
    (_set(["randomness"], "local"), "x.yaml: dealer: only allowed when randomness is 'dealer'"),
    (_set(["randomness"], "two-party"), "x.yaml: dealer: only allowed when randomness is 'dealer'"),
    (
        lambda d: (
            d.pop("dealer"),
            d.update(randomness="two-party"),
            d["parties"].append({"name": "carol", "host": "127.0.0.1", "port": 29613}),
        ),
        "x.yaml: randomness: two-party is for exactly 2 parties (no dealer), got 3; use randomness: dealer",
    ),
    (
        lambda d: (d.pop("dealer"), d.update(randomness="two-party"), d["protocol"].update(comparisons="fss")),
        "x.yaml: protocol.comparisons: fss needs randomness: dealer (the dealer makes the comparison keys)",
    ),
    (
        _set(["protocol", "comparisons"], "ot"),
        "x.yaml: protocol.comparisons: ot needs randomness: two-party (its material is the two parties' "
        "oblivious transfers), got randomness: dealer; use circuits",
    ),
    (
        lambda d: d.update(randomness="dealer", dealer={"host": "127.0.0.1", "port": 29611}),
        "x.yaml: dealer: address 127.0.0.1:29611 is also a party's address",
    ),
    (
        lambda d: d.update(randomness="dealer", dealer={"host": "127.0.0.1"}),
        "x.yaml: dealer.port: required key is missing",
    ),
    (
        lambda d: d.update(randomness="dealer", dealer={"host": "127.0.0.1", "port": 1, "tls": True}),
        "x.yaml: dealer.tls: unknown key",
    ),
    (
        _set(["protocol", "functions"], {"exp_iterations": 0}),
        "x.yaml: protocol.functions.exp_iterations: expected a value >= 1, got 0",
    ),
    (
        _set(["protocol", "functions"], {"sigmoid_tanh_method": "magic"}),
        "x.yaml: protocol.functions.sigmoid_tanh_method: expected 'reciprocal' or 'chebyshev', got 'magic'",
    ),
    (
        _set(["protocol", "functions"], {"exp_iters": 4}),
        "x.yaml: protocol.functions.exp_iters: unknown key; did you mean exp_iterations?",
    ),
    (_set(["parties", 1, "name"], "dealer"), "x.yaml: parties[1].name: 'dealer' is reserved for the dealer process"),
    (
        _set(["parties", 0, "roles"], ["data_owner"]),
        "x.yaml: parties: expected at least one party with role output",
    ),
    (
        lambda d: (
            d["parties"][0].__setitem__("roles", ["data_owner"]),
            d["parties"][1].__setitem__("roles", ["model_owner", "data_owner", "output"]),
            d["parties"][1].__setitem__("data", "b.safetensors"),
        ),
        "x.yaml: parties[0].roles: the outputs of data owner 'alice' would be revealed to nobody "
        "(give it role output, or add an output party that owns no data)",
    ),
    (
        _set(["parties", 0, "roles"], ["output"]),
        "x.yaml: parties: expected at least one party with role data_owner, found 0\n"
        "x.yaml: parties[0].data: only the data owner may provide data",
    ),
    (
        _set(["parties", 0, "roles"], ["model_owner", "data_owner", "output"]),
        "x.yaml: parties: expected exactly one party with role model_owner, found 2\n"
        "x.yaml: parties[0].weights: required for the model owner",
    ),
    (
        _set(["model", "input_shape"], [1, 0, 8]),
        "x.yaml: model.input_shape: expected positive dimensions, got [1, 0, 8]",
    ),
    (_set(["model", "input_shape"], []), "x.yaml: model.input_shape: expected a non-empty list, got []"),
    (lambda d: d.__setitem__("parties", d["parties"][:1]), "x.yaml: parties: expected at least 2 parties, got 1"),
    (
        _set(["parties", 1, "roles"], []),
        "x.yaml: parties: expected exactly one party with role model_owner, found 0\n"
        "x.yaml: parties[1].weights: only the model owner may provide weights",
    ),
    (_drop(["parties", 1, "weights"]), "x.yaml: parties[1].weights: required for the model owner"),
    (
        _set(["parties", 0, "weights"], "w.safetensors"),
        "x.yaml: parties[0].weights: only the model owner may provide weights",
    ),
    (
        _set(["transport"], "tls"),
        "x.yaml: tls: required for transport tls (the consortium CA and certificates; see `smpc keys`)",
    ),
    (_set(["transport"], "ssl"), "x.yaml: transport: expected 'gloo' or 'tls', got 'ssl'"),
    (
        lambda d: d.update(transport="tls", tls={"ca": "ca.pem", "certs": "keys", "key": "x"}),
        "x.yaml: tls.key: unknown key",
    ),
    (
        _set(["parties", 1, "host"], "10.0.0.2"),
        "x.yaml: tls: required for transport tls (the consortium CA and certificates; see `smpc keys`)",
    ),
    (_set(["protocol", "precision_bits"], 40), "x.yaml: protocol.precision_bits: expected a value <= 24, got 40"),
    (_set(["batch_size"], 0), "x.yaml: batch_size: expected a value >= 1, got 0"),
    (_set(["version"], 2), "x.yaml: version: expected 1, got 2"),
    (_set(["timeouts", "op_s"], -1), "x.yaml: timeouts.op_s: expected a value > 0.0, got -1"),
    (_set(["timeouts", "run_s"], "long"), "x.yaml: timeouts.run_s: expected a number, got 'long'"),
    (_set(["parties", 0], "alice"), "x.yaml: parties[0]: expected a mapping, got 'alice'"),
    (
        lambda d: (d.__setitem__("bogus", 1), d["parties"][1].__setitem__("port", "abc")),
        "x.yaml: parties[1].port: expected an integer, got 'abc'\nx.yaml: bogus: unknown key",
    ),
]


@pytest.mark.parametrize("mutate,expected", BAD, ids=[e.split("\n")[0][8:60] for _, e in BAD])
def test_bad_config_is_reported_exactly(mutate, expected):
    doc = copy.deepcopy(BASE)
    mutate(doc)
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "x.yaml")
    assert str(err.value) == expected


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    config = load_config(path)
    for party in config.parties:
        for file in (party.weights, party.data):
            # a model under the git-ignored runs/ is made on first use (make serve-text)
            made_on_first_use = file is not None and (ROOT / "runs") in file.parents
            assert file is None or file.exists() or made_on_first_use, file
            if file is not None and file.is_dir():  # a model directory: its weights are there
                assert (file / "weights.safetensors").is_file(), file
    program = config.model.program
    if program is not None and (ROOT / "runs") not in program.parents:  # every party reads it
        assert (program / "program.json").is_file(), program


def test_transport_defaults_to_tls_across_hosts_and_gloo_on_one():
    doc = copy.deepcopy(BASE)
    assert parse_config(doc, "x.yaml").plan.transport == "gloo"
    doc["parties"][1]["host"] = "10.0.0.2"
    doc["tls"] = {"ca": "keys/ca.pem", "certs": "keys"}
    config = parse_config(doc, "x.yaml")
    assert config.plan.transport == "tls"
    ca, cert, key = config.tls_files("bob")
    assert (cert.name, key.name, ca.name) == ("bob.pem", "bob.key", "ca.pem")
    doc["transport"] = "gloo"  # an explicit opt-in stays gloo (the parties warn)
    assert parse_config(doc, "x.yaml").plan.transport == "gloo"


def test_two_party_compares_by_ot_unless_told_otherwise():
    doc = copy.deepcopy(BASE)
    doc.pop("dealer")
    doc["randomness"] = "two-party"
    doc.pop("protocol", None)
    assert parse_config(doc, "x.yaml").protocol.comparisons == "ot"
    doc["protocol"] = {"precision_bits": 16}
    assert parse_config(doc, "x.yaml").protocol.comparisons == "ot"
    doc["protocol"]["comparisons"] = "circuits"  # CrypTen's circuits on OT-made AND triples, if asked for
    assert parse_config(doc, "x.yaml").protocol.comparisons == "circuits"
    doc.update(randomness="dealer", dealer=BASE["dealer"])
    del doc["protocol"]["comparisons"]
    assert parse_config(doc, "x.yaml").protocol.comparisons == "circuits"


def test_missing_config_file(tmp_path):
    path = tmp_path / "none.yaml"
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: config file not found$"):
        load_config(path)


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("parties:\n  - name: alice\n    host: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: malformed YAML: line \d+, column \d+: "):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r": expected a mapping at the top level, got list$"):
        load_config(path)


def test_unknown_party_name():
    config = load_config(SHIPPED)
    with pytest.raises(ConfigError, match=r"no party named 'carol' \(parties: alice, bob\)"):
        config.rank_of("carol")


def test_config_is_frozen():
    config = load_config(SHIPPED)
    with pytest.raises(ValidationError, match="frozen"):
        config.batch_size = 3


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_set(["parties", 1, "port"], True), "x.yaml: parties[1].port: expected an integer, got True"),
        (_set(["parties", 1, "port"], 29611.0), "x.yaml: parties[1].port: expected an integer, got 29611.0"),
        (_set(["timeouts"], {"op_s": True}), "x.yaml: timeouts.op_s: expected a number, got True"),
        (_set(["model", "input_shape"], [1, True, 8]), "x.yaml: model.input_shape[1]: expected an integer, got True"),
        (_set(["share_cache"], "yes"), "x.yaml: share_cache: expected true or false, got 'yes'"),
        (_set(["batch_size"], 10**12), "x.yaml: batch_size: expected a value <= 65536, got 1000000000000"),
    ],
)
def test_booleans_are_never_numbers_and_sizes_are_bounded(mutate, expected):
    doc = copy.deepcopy(BASE)
    mutate(doc)
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "x.yaml")
    assert str(err.value) == expected


def test_a_key_given_twice_is_refused_by_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("version: 1\nbatch_size: 8\nbatch_size: 64\n")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}: malformed YAML: line 3, column 1: duplicate key 'batch_size'$"
    ):
        load_config(path)


def test_a_run_dir_that_is_a_file_is_refused(tmp_path):
    doc = copy.deepcopy(BASE)
    (tmp_path / "runs").write_text("not a folder")
    doc["run_dir"] = str(tmp_path / "runs")
    with pytest.raises(
        ConfigError, match=r"^x.yaml: run_dir: .*runs is a file; expected a folder \(created when missing\)$"
    ):
        parse_config(doc, "x.yaml")


def test_each_setting_has_one_name_and_each_rule_a_name_of_its_own():
    from smpc.config import rules

    config = load_config(SHIPPED)
    # the resolved settings live in the plan only: protocol.truncation is what the file says
    assert not hasattr(config, "truncation") and not hasattr(config, "effective_transport")
    assert config.protocol.truncation is None and config.plan.truncation == "dealer"
    assert (config.plan.transport, config.plan.multi_host) == ("gloo", False)
    assert config.plan.processes == ("dealer", *config.names)
    names = [rule.__name__ for rule in rules.RULES]
    assert len(names) == len(set(names)) and all(not n.startswith("_") for n in names)
    # a rule is a plain function of (config, plan): it can be run, and found, alone
    assert rules.fss_needs_the_dealer_and_two_parties(config, config.plan) == []
    assert rules.problems(config) == []
