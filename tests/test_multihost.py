"""A real multi-host run: every party and the dealer in its own network namespace.

The namespaces hang off a bridge in a hub namespace; their addresses come from one
private /24 that exists only on the veth links made here, and everything is removed
afterwards, also when the test fails. The run uses TLS (the default across hosts),
and an outsider on the same network with a certificate from another CA is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from smpc import artifacts, keys

SUBNET = "10.231.7"
ROOT = Path(__file__).resolve().parent.parent
NODES = ("alice", "bob", "carol", "dealer", "mallory")


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=30)


@pytest.fixture
def hosts():
    tag = f"s{os.getpid() % 100000}"
    hub = f"{tag}-hub"
    made: list[str] = []
    try:
        try:
            _run("ip", "netns", "add", hub)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"network namespaces cannot be created here: {exc}")
        made.append(hub)
        _run("ip", "netns", "exec", hub, "ip", "link", "add", "br0", "type", "bridge")
        _run("ip", "netns", "exec", hub, "ip", "link", "set", "br0", "up")
        addresses = {}
        for i, name in enumerate(NODES):
            ns, veth, peer = f"{tag}-{name}", f"{tag}a{i}", f"{tag}b{i}"
            _run("ip", "netns", "add", ns)
            made.append(ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
            _run("ip", "link", "set", veth, "netns", ns)
            _run("ip", "link", "set", peer, "netns", hub)
            _run("ip", "netns", "exec", hub, "ip", "link", "set", peer, "master", "br0")
            _run("ip", "netns", "exec", hub, "ip", "link", "set", peer, "up")
            address = f"{SUBNET}.{10 + i}"
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", veth)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", veth, "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            addresses[name] = (ns, address)
        yield addresses
    finally:
        for ns in reversed(made):  # deleting a namespace removes its veth ends too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


MALLORY = """
import socket, ssl, sys, time
from smpc import wire
ca, cert, key, host, port = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)            # trusts the consortium ...
ctx.load_cert_chain(cert, key)           # ... but its own "bob" certificate comes from another CA
ctx.check_hostname = False
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        raw = socket.create_connection((host, int(port)), timeout=2)
    except OSError:
        time.sleep(0.1)  # alice is not listening yet
        continue
    try:
        tls = ctx.wrap_socket(raw)
        wire.send_json(tls, wire.Kind.HELLO, {"party": "bob", "rank": 1})
        tls.recv(1)
        print("mallory: a reply?!" if tls.recv(1) else "mallory: refused (closed)")
    except (OSError, wire.WireError) as exc:
        print(f"mallory: refused ({type(exc).__name__})")
    break
else:
    print("mallory: never reached alice")
"""


def test_joint_inference_across_network_namespaces_over_tls(tmp_path, hosts):
    certs = tmp_path / "keys"
    keys.create_ca(certs)
    for name in ("alice", "bob", "carol", "dealer"):
        keys.issue(certs, name)
    foreign = tmp_path / "foreign"
    keys.create_ca(foreign)
    keys.issue(foreign, "bob")
    full = artifacts.load_data(ROOT / "data" / "digits-test.safetensors", (1, 8, 8))
    artifacts.save_data(tmp_path / "data.safetensors", full.inputs[:20], full.labels[:20])
    doc = {
        "parties": [
            {
                "name": "alice",
                "host": hosts["alice"][1],
                "port": 29600,
                "roles": ["data_owner", "output"],
                "data": str(tmp_path / "data.safetensors"),
            },
            {
                "name": "bob",
                "host": hosts["bob"][1],
                "port": 29600,
                "roles": ["model_owner"],
                "weights": str(ROOT / "models" / "digits_cnn.safetensors"),
            },
            {"name": "carol", "host": hosts["carol"][1], "port": 29600},
        ],
        "model": {"architecture": "digits_cnn", "input_shape": [1, 8, 8]},
        "batch_size": 10,
        "randomness": "dealer",
        "dealer": {"host": hosts["dealer"][1], "port": 29600},
        "tls": {"ca": str(certs / "ca.pem"), "certs": str(certs)},
        "timeouts": {"connect_s": 60, "op_s": 20, "run_s": 120},
        "run_dir": str(tmp_path / "run"),
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc))

    def in_ns(name: str, *argv: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["ip", "netns", "exec", hosts[name][0], sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )

    procs = {
        "alice": in_ns("alice", "-m", "launch", "party", str(config), "--name", "alice", "--no-progress"),
        "mallory": in_ns(
            "mallory",
            "-c",
            MALLORY,
            str(certs / "ca.pem"),
            str(foreign / "bob.pem"),
            str(foreign / "bob.key"),
            hosts["alice"][1],
            "29600",
        ),
    }
    procs["dealer"] = in_ns("dealer", "-m", "launch", "dealer", str(config))
    time.sleep(8)  # alice listens at once; mallory knocks before the real bob even starts
    procs["bob"] = in_ns("bob", "-m", "launch", "party", str(config), "--name", "bob", "--no-progress")
    procs["carol"] = in_ns("carol", "-m", "launch", "party", str(config), "--name", "carol", "--no-progress")
    try:
        out = {name: p.communicate(timeout=180)[0] for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    for name in ("alice", "bob", "carol", "dealer"):
        assert procs[name].returncode == 0, f"{name}:\n{out[name]}"
    assert "mallory: refused" in out["mallory"] and "a reply" not in out["mallory"]
    assert f"refused a connection from {hosts['mallory'][1]}" in out["alice"]
    assert f"peer bob connected from {hosts['bob'][1]} (certificate verified)" in out["alice"]
    assert f"party alice connected from {hosts['alice'][1]}" in out["dealer"]
    revealed = artifacts.load_outputs(tmp_path / "run" / "alice.output.safetensors")
    assert revealed.shape == (20, 10)
    assert '"accuracy_mpc"' in out["alice"]
