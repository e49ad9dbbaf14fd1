"""A consortium built the way real organizations build one: each member makes its own
private key and a signing request (`smpc keys request`), the CA holder only signs
(`smpc keys sign`); members are added later the same way, and revoked (`smpc keys
revoke`, `tls.crl`). Real keys, real certificates, real TLS runs."""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import stat
import threading

import pytest
import yaml

from harness import write_config
from smpc.runs.runner import run
from smpc import keys, transport
from smpc.config import load_config
from smpc.errors import SmpcError
from launch.cli import main as smpc_main


def _member(tmp_path, ca, name, certs, **sign):
    # on NAME's host: key and request; at the CA holder: the signature; back on the host
    host = tmp_path / "hosts" / name
    assert smpc_main(["keys", "request", name, "--out", str(host)]) == 0
    argv = ["sign", str(host / f"{name}.csr"), "--ca", str(ca), "--out", str(host / f"{name}.pem")]
    for option, value in sign.items():
        argv += [f"--{option}", str(value)]
    assert smpc_main(["keys", *argv]) == 0
    certs.mkdir(exist_ok=True)  # one machine stands for every host: each member's own files
    for suffix in (".key", ".pem"):
        shutil.copy(host / f"{name}{suffix}", certs / f"{name}{suffix}")


def _tls_config(tmp_path, ca, certs, helpers, **tls):
    path = write_config(tmp_path, samples=24, batch_size=12, helpers=helpers, dealer=True)
    doc = yaml.safe_load(path.read_text())
    doc["transport"] = "tls"
    doc["tls"] = {"ca": str(ca / "ca.pem"), "certs": str(certs), **{k: str(v) for k, v in tls.items()}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


def test_three_organizations_then_a_fourth_with_requests_and_signatures_only(tmp_path):
    ca, certs = tmp_path / "ca", tmp_path / "certs"
    assert smpc_main(["keys", "init", str(ca)]) == 0  # the CA alone: the holder makes no member's key
    for name in ("alice", "bob", "helper0", "dealer"):
        _member(tmp_path, ca, name, certs)
    assert sorted(p.name for p in ca.iterdir() if p.suffix == ".key") == ["ca.key"]
    assert stat.S_IMODE(os.stat(tmp_path / "hosts" / "alice" / "alice.key").st_mode) == 0o600
    report = run(_tls_config(tmp_path, ca, certs, helpers=1), echo=False)
    assert report.agreement == 1.0

    _member(tmp_path, ca, "helper1", certs)  # a fourth organization joins the same way
    report = run(_tls_config(tmp_path, ca, certs, helpers=2), echo=False)
    assert report.agreement == 1.0 and set(report.parties) == {"alice", "bob", "helper0", "helper1"}

    shown = "\n".join(keys.describe(ca))
    assert "signed by this CA (5):" in shown and sum(line.endswith("  valid") for line in shown.splitlines()) == 5

    assert smpc_main(["keys", "revoke", "helper1", "--ca", str(ca)]) == 0
    with pytest.raises(SmpcError, match=rf"^{certs / 'helper1.pem'}: the certificate of helper1 was revoked on "):
        run(_tls_config(tmp_path, ca, certs, helpers=2, crl=ca / "crl.pem"), echo=False)
    assert "revoked" in "\n".join(keys.describe(ca))


def test_a_revoked_peer_is_refused_in_the_handshake(tmp_path):
    ca, certs = tmp_path / "ca", tmp_path / "certs"
    smpc_main(["keys", "init", str(ca)])
    for name in ("bob", "carol"):
        _member(tmp_path, ca, name, certs)
    keys.revoke(ca, "carol")
    server = transport.server_context(ca / "ca.pem", certs / "bob.pem", certs / "bob.key", ca / "crl.pem")
    client = transport.client_context(ca / "ca.pem", certs / "carol.pem", certs / "carol.key")
    a, b = socket.socketpair()
    seen = []

    def serve():
        try:
            server.wrap_socket(a, server_side=True).recv(1)
        except ssl.SSLError as exc:
            seen.append(exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else str(exc))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client.wrap_socket(b, server_hostname="bob").send(b"x")
    except (ssl.SSLError, OSError):
        pass
    thread.join(10)
    a.close(), b.close()
    assert seen and "revoked" in seen[0]


@pytest.mark.parametrize(
    "case, message",
    [
        ("expired", "the certificate of alice expired on "),
        ("future", "the certificate of alice is not valid before "),
        ("wrong_name", "a certificate for 'bob', not 'alice'"),
        ("foreign_ca", "not issued by the consortium CA "),
    ],
)
def test_own_certificate_problems_are_one_line_naming_the_file(tmp_path, case, message):
    ca, certs = tmp_path / "ca", tmp_path / "certs"
    smpc_main(["keys", "init", str(ca)])
    keys.request("alice", certs)
    keys.request("bob", tmp_path / "bob")
    now = datetime.datetime.now(datetime.timezone.utc)
    if case == "expired":
        keys.sign_request(certs / "alice.csr", ca, certs / "alice.pem", days=1, start=now - datetime.timedelta(days=3))
    elif case == "future":
        keys.sign_request(certs / "alice.csr", ca, certs / "alice.pem", days=1, start=now + datetime.timedelta(days=3))
    elif case == "wrong_name":
        keys.sign_request(tmp_path / "bob" / "bob.csr", ca, certs / "alice.pem")
    else:
        smpc_main(["keys", "init", str(tmp_path / "other")])
        keys.sign_request(certs / "alice.csr", tmp_path / "other", certs / "alice.pem")
    with pytest.raises(SmpcError, match=rf"^{certs / 'alice.pem'}: {message}"):
        keys.check_certificate("alice", ca / "ca.pem", certs / "alice.pem", certs / "alice.key")


def test_signing_refuses_what_it_must_in_one_line(tmp_path, capsys):
    ca = tmp_path / "ca"
    smpc_main(["keys", "init", str(ca)])
    keys.request("mallory", tmp_path / "m")
    config = write_config(tmp_path, samples=10, batch_size=10)
    assert (
        smpc_main(
            [
                "keys",
                "sign",
                str(tmp_path / "m" / "mallory.csr"),
                "--ca",
                str(ca),
                "--out",
                str(tmp_path / "x.pem"),
                "--config",
                str(config),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'm' / 'mallory.csr'}: 'mallory' is not a party, the dealer or a client of the config (alice, bob)\n"
    )
    assert not (tmp_path / "x.pem").exists()
    assert (
        smpc_main(
            ["keys", "sign", str(tmp_path / "m" / "mallory.key"), "--ca", str(ca), "--out", str(tmp_path / "x.pem")]
        )
        == 2
    )
    assert "not a certificate signing request" in capsys.readouterr().err
    forged = (tmp_path / "m" / "mallory.csr").read_bytes().replace(b"A", b"B", 1)
    (tmp_path / "forged.csr").write_bytes(forged)
    assert (
        smpc_main(["keys", "sign", str(tmp_path / "forged.csr"), "--ca", str(ca), "--out", str(tmp_path / "x.pem")])
        == 2
    )
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'forged.csr'}: ")
    assert smpc_main(["keys", "request", "mallory", "--out", str(tmp_path / "m")]) == 2  # a key is never overwritten
    assert "exists already" in capsys.readouterr().err
