"""Consortium keys: a CA, and one private key and certificate per party (and the dealer).

A real consortium: the CA holder runs `smpc keys init CA_DIR` (the CA only); each member
runs `smpc keys request NAME --out DIR` on its own host (its private key never leaves
it) and sends NAME.csr; the CA holder runs `smpc keys sign NAME.csr --ca CA_DIR --out
NAME.pem [--config CONFIG]` and sends the certificate back; `smpc keys revoke NAME --ca
CA_DIR` writes the CA's revocation list (`tls.crl`); `smpc keys show CA_DIR` lists what
the CA signed and each certificate's status. For a demo or a test, `smpc keys init DIR
NAME...` makes every key in one place, `add` issues more, `rotate` replaces one. A
certificate's common name is the party's name in the config: that is the identity a
TLS peer must prove. Private keys are written with mode 0600 and never printed or logged.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, cast
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smpc.errors import ArtifactError, SmpcError

CA_NAME = "ca"
VALID_DAYS = 365
ISSUED = "issued"  # in the CA's folder: every certificate it signed, by serial
CRL = "crl.pem"


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    # atomically (a temporary file, then a rename), created with `mode` from the start:
    # a private key is never readable by others, not even briefly
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write(
        path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )


def _write_public(path: Path, pem: Any) -> None:
    # a certificate, a request or a revocation list, as PEM
    _write(path, pem.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smpc consortium"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


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


def _load_ca(ca_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        ca_key = serialization.load_pem_private_key((ca_dir / f"{CA_NAME}.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate((ca_dir / f"{CA_NAME}.pem").read_bytes())
    except FileNotFoundError:
        raise SmpcError(f"{ca_dir}: no consortium CA here (run `smpc keys init` first)") from None
    except ValueError as exc:
        raise SmpcError(f"{ca_dir}: the CA's key or certificate is not PEM ({exc})") from None
    return cast(ec.EllipticCurvePrivateKey, ca_key), ca_cert  # `smpc keys init` makes an EC key


def _certify(
    ca_dir: Path, name: str, public_key: Any, days: int = VALID_DAYS, start: datetime.datetime | None = None
) -> x509.Certificate:
    # the CA signs `public_key` for identity `name` (common name and DNS name), valid from
    # `start` (now) for `days`; every certificate issued is kept in ca_dir/issued/
    ca_key, ca_cert = _load_ca(ca_dir)
    begin = start or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (ca_dir / ISSUED).mkdir(exist_ok=True)
    _write_public(ca_dir / ISSUED / f"{cert.serial_number:x}.pem", cert)
    return cert


def _write_identity_extras(directory: Path, name: str, key: ec.EllipticCurvePrivateKey) -> None:
    # the bare public key, for checking what NAME signs (e.g. `smpc model verify`), and the
    # AES key that seals NAME's files at rest (kept on rotation)
    _write(
        directory / f"{name}.pub",
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    storage = directory / f"{name}.storage"
    if not storage.exists():
        from smpc.sealed import create_key

        create_key(storage)


def issue(directory: Path, name: str) -> None:
    """A new key and CA-signed certificate for party `name` (NAME.key, NAME.pem), both made
    by the CA holder (a demo or test consortium; real members use `request` and `sign`)."""
    _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certify(directory, name, key.public_key())
    _write_private(directory / f"{name}.key", key)
    _write_public(directory / f"{name}.pem", cert)
    _write_identity_extras(directory, name, key)


def request(name: str, out: Path) -> Path:
    """On NAME's own host: a new private key (OUT/NAME.key, 0600, never leaves the host)
    and a certificate signing request for the consortium CA (OUT/NAME.csr)."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / f"{name}.key").exists():
        raise SmpcError(f"{out / (name + '.key')}: exists already (a key is never overwritten)")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(name))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(out / f"{name}.key", key)
    _write_public(out / f"{name}.csr", csr)
    _write_identity_extras(out, name, key)
    return out / f"{name}.csr"


def sign_request(
    csr_path: Path,
    ca_dir: Path,
    out: Path,
    days: int = VALID_DAYS,
    known: Sequence[str] | None = None,
    start: datetime.datetime | None = None,
) -> x509.Certificate:
    """The CA holder signs a request: the identity is the request's name, which must be a
    valid party name (and one of `known`, a config's names, when given)."""
    from smpc.config import valid_name

    csr = _read_pem(csr_path, x509.load_pem_x509_csr, "certificate signing request", "smpc keys request")
    if not csr.is_signature_valid:
        raise SmpcError(f"{csr_path}: the request's signature does not match its key (damaged or forged)")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if len(names) == 1 else ""
    if not valid_name(name):
        raise SmpcError(f"{csr_path}: requests identity {name!r}; expected one party name")
    if known is not None and name not in known:
        raise SmpcError(
            f"{csr_path}: {name!r} is not a party, the dealer or a client of the config ({', '.join(known)})"
        )
    if not 1 <= days <= 3650:
        raise SmpcError(f"--days: expected 1..3650, got {days}")
    cert = _certify(ca_dir, name, csr.public_key(), days, start)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_public(out, cert)
    return cert


def revoke(ca_dir: Path, name: str) -> tuple[Path, list[int]]:
    """Revoke every certificate the CA issued to NAME: ca_dir/crl.pem (signed by the CA)
    lists them with all earlier revocations. Returns the CRL's path and the new serials."""
    ca_key, ca_cert = _load_ca(ca_dir)
    crl_path = ca_dir / CRL
    revoked: dict[int, datetime.datetime] = {}
    if crl_path.is_file():
        for entry in x509.load_pem_x509_crl(crl_path.read_bytes()):
            revoked[entry.serial_number] = entry.revocation_date_utc
    now = datetime.datetime.now(datetime.timezone.utc)
    new = [c.serial_number for c in _issued(ca_dir) if common_name(c) == name and c.serial_number not in revoked]
    if not new and not any(common_name(c) == name for c in _issued(ca_dir)):
        raise SmpcError(f"{ca_dir}: the CA issued no certificate to {name!r}")
    revoked.update({serial: now for serial in new})
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=VALID_DAYS))
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_public(crl_path, crl)
    return crl_path, new


def _issued(ca_dir: Path) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(p.read_bytes()) for p in sorted((ca_dir / ISSUED).glob("*.pem"))]


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _read_pem(path: Path, load: Any, what: str, maker: str) -> Any:
    # a PEM object from a file, or one line naming the file and what it should have been
    try:
        return load(path.read_bytes())
    except FileNotFoundError:
        raise SmpcError(f"{path}: {what} not found") from None
    except ValueError:
        raise SmpcError(f"{path}: not a {what} (PEM, from `{maker}`)") from None


def _revocations(crl_path: Path | None, ca_cert: x509.Certificate) -> dict[int, datetime.datetime]:
    if crl_path is None:
        return {}
    crl = _read_pem(crl_path, x509.load_pem_x509_crl, "revocation list", "smpc keys revoke")
    if not crl.is_signature_valid(ca_cert.public_key()):
        raise SmpcError(f"{crl_path}: the revocation list is not signed by the consortium CA")
    return {entry.serial_number: entry.revocation_date_utc for entry in crl}


def check_certificate(name: str, ca: Path, cert: Path, key: Path, crl: Path | None = None) -> None:
    """Before connecting, NAME checks its own certificate: issued by the consortium CA to
    NAME, matching its key, valid now, not revoked. SmpcError naming the file otherwise."""
    try:
        ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
        mine = x509.load_pem_x509_certificate(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), None)
    except FileNotFoundError as exc:
        raise SmpcError(f"{exc.filename}: TLS file for {name} not found") from None
    except ValueError:
        raise SmpcError(f"{cert}: not a PEM certificate with its key {key}") from None
    try:
        ca_public, algorithm = ca_cert.public_key(), mine.signature_hash_algorithm
        if not isinstance(ca_public, ec.EllipticCurvePublicKey) or algorithm is None:
            raise TypeError("not an ECDSA signature")  # as verify would fail on it
        ca_public.verify(mine.signature, mine.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except Exception:  # InvalidSignature, or a CA key of another kind
        raise SmpcError(f"{cert}: not issued by the consortium CA {ca}") from None
    if common_name(mine) != name:
        raise SmpcError(f"{cert}: a certificate for {common_name(mine)!r}, not {name!r}")
    # the consortium's keys are EC (`smpc keys`); others fail here as before
    mine_public = cast(ec.EllipticCurvePublicKey, mine.public_key())
    own_public = cast(ec.EllipticCurvePublicKey, private.public_key())
    if mine_public.public_numbers() != own_public.public_numbers():
        raise SmpcError(f"{cert}: does not match the private key {key}")
    now = datetime.datetime.now(datetime.timezone.utc)
    if now > mine.not_valid_after_utc:
        raise SmpcError(f"{cert}: the certificate of {name} expired on {mine.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if now < mine.not_valid_before_utc:
        raise SmpcError(
            f"{cert}: the certificate of {name} is not valid before {mine.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    revoked = _revocations(crl, ca_cert).get(mine.serial_number)
    if revoked is not None:
        raise SmpcError(f"{cert}: the certificate of {name} was revoked on {revoked:%Y-%m-%d %H:%M} UTC ({crl})")


def check_identities(config: Any, names: Sequence[str]) -> None:
    """Every TLS file of `names` present, and each certificate valid for its name (see
    check_certificate): the launcher's check before it starts anyone."""
    for name in names:
        files = config.tls_files(name)
        for path in files:
            if not path.is_file():
                raise ArtifactError(f"{path}: TLS file for {name} not found (create keys with `smpc keys init`)")
        check_certificate(name, *files)


def describe(directory: Path) -> list[str]:
    """One line per certificate in `directory`: name, issuer, validity, fingerprint; in a
    CA's folder also every certificate it signed, with its status (valid, expired, revoked)."""
    lines = []
    for path in sorted(directory.glob("*.pem")):
        if path.name == CRL:
            continue
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        issuer = cast(str, cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)  # a CN is a string
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()[:32]
        lines.append(
            f"{path.name:<16} {common_name(cert):<20} issued by {issuer:<20} valid until {cert.not_valid_after_utc:%Y-%m-%d}  sha256:{fingerprint}"
        )
    if (directory / ISSUED).is_dir():
        _, ca_cert = _load_ca(directory)
        revoked = _revocations(directory / CRL if (directory / CRL).is_file() else None, ca_cert)
        now = datetime.datetime.now(datetime.timezone.utc)
        lines.append(f"signed by this CA ({len(list((directory / ISSUED).glob('*.pem')))}):")
        for cert in sorted(_issued(directory), key=lambda c: (common_name(c), c.not_valid_before_utc)):
            status = (
                "revoked " + f"{revoked[cert.serial_number]:%Y-%m-%d}"
                if cert.serial_number in revoked
                else "expired"
                if now > cert.not_valid_after_utc
                else "valid"
            )
            lines.append(
                f"  {common_name(cert):<20} serial {cert.serial_number:x}  {cert.not_valid_before_utc:%Y-%m-%d} .. "
                f"{cert.not_valid_after_utc:%Y-%m-%d}  {status}"
            )
    return lines


def known_names(config_path: Path | None) -> list[str] | None:
    # the identities a config knows: its parties, the dealer, and a service's clients
    if config_path is None:
        return None
    from smpc.config import load_config

    config = load_config(config_path)
    clients = list(config.serving.clients) if config.serving is not None else []
    return [*config.plan.processes, *clients]


def check_names(names: Sequence[str]) -> None:
    """Refuse a name that the config could not hold (before any file is written)."""
    from smpc.config import valid_name

    for name in names:
        if not valid_name(name):
            raise SmpcError(f"{name!r}: expected a lower-case name (letters, digits, '-', '_'), as in the config")


def init_consortium(directory: Path, names: Sequence[str]) -> None:
    """`smpc keys init`: a new CA in `directory`, and (for a demo) a key and certificate
    for each of `names`."""
    check_names(names)
    if (directory / f"{CA_NAME}.key").exists():
        raise SmpcError(f"{directory}: a CA exists already (use `smpc keys rotate` for one party)")
    create_ca(directory)
    for name in names:
        issue(directory, name)


def add_members(directory: Path, names: Sequence[str]) -> None:
    """`smpc keys add`: a key and certificate from the CA in `directory` for each new name."""
    check_names(names)
    for name in names:
        if (directory / f"{name}.pem").exists():
            raise SmpcError(f"{directory}: {name!r} has a certificate already (use `smpc keys rotate`)")
    for name in names:
        issue(directory, name)


def rotate(directory: Path, name: str) -> None:
    """`smpc keys rotate`: replace `name`'s key and certificate."""
    check_names([name])
    if not (directory / f"{name}.pem").exists():
        raise SmpcError(f"{directory}: no certificate for {name!r}")
    issue(directory, name)
