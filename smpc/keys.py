"""Consortium keys: a CA, and one private key and certificate per party (and the dealer).

`smpc keys init DIR NAME...` creates them, `smpc keys add DIR NAME...` issues more from
the same CA (a new client identity, say), `smpc keys show DIR` lists the certificates,
`smpc keys rotate DIR NAME` replaces one party's key. A certificate's common name is
the party's name in the config: that is the identity a TLS peer must prove. Private
keys are written with mode 0600 and never printed or logged.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smpc.errors import SmpcError

CA_NAME = "ca"
VALID_DAYS = 365


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # created 0600 from the start: never readable by others, not even briefly
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smpc consortium"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(directory: Path) -> None:
    """A new consortium CA in `directory` (ca.key, ca.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("smpc consortium CA"))
        .issuer_name(_name("smpc consortium CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(directory / f"{CA_NAME}.key", key)
    _write_public(directory / f"{CA_NAME}.pem", cert)


def issue(directory: Path, name: str) -> None:
    """A new key and CA-signed certificate for party `name` (NAME.key, NAME.pem)."""
    try:
        ca_key = serialization.load_pem_private_key((directory / f"{CA_NAME}.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate((directory / f"{CA_NAME}.pem").read_bytes())
    except FileNotFoundError:
        raise SmpcError(f"{directory}: no consortium CA here (run `smpc keys init` first)") from None
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(directory / f"{name}.key", key)
    _write_public(directory / f"{name}.pem", cert)
    # the bare public key, for checking what NAME signs (e.g. `smpc model verify`)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    tmp = directory / f"{name}.pub.tmp"
    tmp.write_bytes(pub)
    os.replace(tmp, directory / f"{name}.pub")
    storage = directory / f"{name}.storage"
    if not storage.exists():  # the AES key that seals NAME's files at rest; kept on rotation
        from smpc.sealed import create_key

        create_key(storage)


def describe(directory: Path) -> list[str]:
    """One line per certificate in `directory`: name, issuer, validity, fingerprint."""
    lines = []
    for path in sorted(directory.glob("*.pem")):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()[:32]
        lines.append(
            f"{path.name:<16} {cn:<20} issued by {issuer:<20} valid until {cert.not_valid_after_utc:%Y-%m-%d}  sha256:{fingerprint}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """`smpc keys init|show|rotate`."""
    parser = argparse.ArgumentParser(prog="smpc keys", description="Consortium CA and per-party keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a CA and a key and certificate for each NAME")
    init.add_argument("directory", type=Path)
    init.add_argument("names", nargs="+", help="party names as in the config (and 'dealer')")
    add = sub.add_parser("add", help="a key and certificate from the existing CA for each new NAME (e.g. a client)")
    add.add_argument("directory", type=Path)
    add.add_argument("names", nargs="+")
    show = sub.add_parser("show", help="list the certificates (never the keys)")
    show.add_argument("directory", type=Path)
    rotate = sub.add_parser("rotate", help="replace NAME's key and certificate")
    rotate.add_argument("directory", type=Path)
    rotate.add_argument("name")
    args = parser.parse_args(argv)
    try:
        from smpc.config import valid_name

        for name in getattr(args, "names", None) or [getattr(args, "name", None)] * (args.command == "rotate"):
            if not valid_name(name):
                raise SmpcError(f"{name!r}: expected a lower-case name (letters, digits, '-', '_'), as in the config")
        if args.command == "init":
            if (args.directory / f"{CA_NAME}.key").exists():
                raise SmpcError(f"{args.directory}: a CA exists already (use `smpc keys rotate` for one party)")
            create_ca(args.directory)
            for name in args.names:
                issue(args.directory, name)
        elif args.command == "add":
            for name in args.names:
                if (args.directory / f"{name}.pem").exists():
                    raise SmpcError(f"{args.directory}: {name!r} has a certificate already (use `smpc keys rotate`)")
            for name in args.names:
                issue(args.directory, name)
        elif args.command == "rotate":
            if not (args.directory / f"{args.name}.pem").exists():
                raise SmpcError(f"{args.directory}: no certificate for {args.name!r}")
            issue(args.directory, args.name)
        print("\n".join(describe(args.directory)))
    except SmpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
