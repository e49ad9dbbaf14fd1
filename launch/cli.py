"""The `smpc` command table: every subcommand's parser (argparse only) and the library call
it makes. No other module defines a `main`; `python -m launch COMMAND ...` is the same.

Every subcommand exits alike: 0 when done, 2 on the user's mistake or a failed run (one
`error:` line saying what to do), 1 on an internal error (with its traceback), 130 when
interrupted. A process that the launcher starts (a party, a service's party, the dealer)
runs through smpc.runfiles.run_process, which writes its failure record."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from collections.abc import Callable

USAGE = """usage: smpc COMMAND ...

commands:
  launch CONFIG [--report FILE]   run every party of CONFIG on this machine
  party CONFIG --name NAME        run exactly one party (one per host)
  dealer CONFIG                   run the trusted dealer of CONFIG (randomness: dealer)
  serve CONFIG [--name NAME]      standing parties answering clients (all here, or one party)
  query CONFIG --client NAME --data FILE [--rows N] [--concurrency C] [--report FILE]
                                  query a running service with the rows of a data file
  keys init|add|show|rotate DIR ... consortium CA and per-party (and client) keys and certificates
  keys request|sign|revoke ...    a member's own key and request; the CA holder signs, revokes
  model pack|sign|calibrate|verify ...  signed model directories
  open FILE --key KEY [--out FILE]  decrypt a sealed file of your own (outputs, shares' metadata)
  --version                       versions of smpc, CrypTen and torch
  bench STUDY [--out DIR]         measure a study (a matrix of settings): tables and plots

exit status: 0 done; 2 a mistake to correct or a failed run (the `error:` line says what); 1 an internal error
"""

EXIT_INTERNAL = 1  # a bug or an environment failure: the traceback is printed
EXIT_USAGE = 2  # the user's mistake (SmpcError, or argparse's usage error): one `error:` line
EXIT_INTERRUPTED = 130


def _versions() -> str:
    # read from the installed packages' metadata: importing CrypTen is slow and noisy
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return f"smpc {of('smpc')} (CrypTen {of('crypten')}, torch {of('torch')})"


# --- launch -------------------------------------------------------------------------------


def launch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smpc launch", description="Start every party of CONFIG on this machine.")
    parser.add_argument("config", help="YAML run configuration")
    parser.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="do not relay party output")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print the cost profile: bytes, rounds and seconds per layer and op, largest first",
    )
    return parser


def _launch(args: argparse.Namespace) -> int:
    from smpc.runs import profile
    from smpc.runs.runner import run

    try:
        report = run(args.config, report_path=args.report, echo=not args.quiet)
    except KeyboardInterrupt:
        print("interrupted: all parties stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(report.summary())
    if args.profile:
        party = profile.busiest(report.parties)
        print()
        print(profile.table(report.parties[party]["layers"], party))
    if args.report:
        print(f"report written to {args.report}")
    return 0


# --- the processes: party, dealer, serve ----------------------------------------------------


def party_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smpc party", description="Run exactly one party of a joint inference.")
    parser.add_argument("config", help="the run's YAML config (the same file at every party)")
    parser.add_argument("--name", required=True, help="which party of the config this process is")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _party(args: argparse.Namespace) -> int:
    from parties.one_off import party_process
    from smpc.runfiles import run_process

    return run_process(args.config, args.name, lambda config: party_process(config, args.name, not args.no_progress))


def dealer_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smpc dealer", description="Run the trusted dealer of CONFIG.")
    parser.add_argument("config")
    return parser


def _dealer(args: argparse.Namespace) -> int:
    from smpc.dealer.server import dealer_process
    from smpc.runfiles import run_process

    return run_process(args.config, "dealer", dealer_process)


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smpc serve", description="Run the parties of CONFIG as a service.")
    parser.add_argument("config", help="YAML config with a serving section")
    parser.add_argument("--name", help="run only this party (or 'dealer'), as on its own host")
    parser.add_argument("--quiet", action="store_true", help="do not relay the processes' output")
    return parser


def _serve(args: argparse.Namespace) -> int:
    """Exit 0 when drained on request, 2 on a mistake in CONFIG or its files (one `error:`
    line) or when a process failed, as `smpc launch`."""
    from launch.serve import require_serving, serve_all
    from smpc.config import load_config
    from smpc.runfiles import run_process

    if args.name == "dealer":
        # else a one-off config's dealer would wait timeouts.connect_s for parties that never come
        require_serving(load_config(args.config))
        from smpc.dealer.server import dealer_process

        return run_process(args.config, "dealer", dealer_process)
    if args.name is not None:
        from parties.service import Service

        return run_process(args.config, args.name, lambda config: Service(config, args.name).run())
    return serve_all(load_config(args.config), echo=not args.quiet)


# --- query ------------------------------------------------------------------------------------


def query_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smpc query", description="Query a running service with the rows of a data file."
    )
    parser.add_argument("config", help="the service's YAML config")
    parser.add_argument("--client", required=True, help="this client's identity (its certificate in tls.certs)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", help="safetensors file of the model's inputs (and labels), as a data owner's")
    what.add_argument("--text", help="a text file of sentences, one per line (a model with a tokenizer)")
    parser.add_argument("--labels", help="with --text: a text file of integer labels, one per line")
    parser.add_argument("--rows", type=int, help="only the first N rows")
    parser.add_argument("--concurrency", type=int, default=1, help="clients querying at once (default 1)")
    parser.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    return parser


def _query(args: argparse.Namespace) -> int:
    from smpc.runfiles import write_json
    from smpc.serve.client import ServiceError
    from smpc.serve.query import query

    try:
        report = query(args.config, args.client, args.data, args.rows, args.concurrency, args.text, args.labels)
    except ServiceError as exc:  # the service could not answer: not the user's mistake
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(report, indent=2))
    if args.report:
        write_json(Path(args.report), report)
    return 0


# --- keys ---------------------------------------------------------------------------------------


def keys_parser() -> argparse.ArgumentParser:
    from smpc.keys import VALID_DAYS

    parser = argparse.ArgumentParser(prog="smpc keys", description="Consortium CA and per-party keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a CA, and (for a demo) a key and certificate for each NAME")
    init.add_argument("directory", type=Path)
    init.add_argument("names", nargs="*", help="party names as in the config (and 'dealer'); none: the CA only")
    add = sub.add_parser("add", help="a key and certificate from the existing CA for each new NAME (e.g. a client)")
    add.add_argument("directory", type=Path)
    add.add_argument("names", nargs="+")
    req = sub.add_parser("request", help="on NAME's host: a private key (kept there) and a signing request for the CA")
    req.add_argument("name", help="the party's (client's, dealer's) name in the config")
    req.add_argument(
        "--out", type=Path, required=True, help="folder for NAME.key (0600), NAME.csr, NAME.pub, NAME.storage"
    )
    sig = sub.add_parser("sign", help="the CA holder signs a request: the certificate binds the request's name")
    sig.add_argument("csr", type=Path, help="NAME.csr from `smpc keys request`")
    sig.add_argument("--ca", type=Path, required=True, help="the CA's folder (ca.key, ca.pem)")
    sig.add_argument("--out", type=Path, required=True, help="the certificate to write (NAME.pem)")
    sig.add_argument("--days", type=int, default=VALID_DAYS, help=f"validity in days (default {VALID_DAYS})")
    sig.add_argument("--config", type=Path, help="refuse a name this config does not know")
    rev = sub.add_parser("revoke", help="revoke every certificate issued to NAME (writes the CA's crl.pem)")
    rev.add_argument("name")
    rev.add_argument("--ca", type=Path, required=True)
    show = sub.add_parser("show", help="list the certificates (never the keys); in a CA's folder, all it signed")
    show.add_argument("directory", type=Path)
    rotate = sub.add_parser("rotate", help="replace NAME's key and certificate")
    rotate.add_argument("directory", type=Path)
    rotate.add_argument("name")
    return parser


def _keys(args: argparse.Namespace) -> int:
    from smpc import keys

    if args.command == "init":
        keys.init_consortium(args.directory, args.names)
    elif args.command == "add":
        keys.add_members(args.directory, args.names)
    elif args.command == "rotate":
        keys.rotate(args.directory, args.name)
    elif args.command == "request":
        keys.check_names([args.name])
        csr = keys.request(args.name, args.out)
        print(f"private key {args.out / (args.name + '.key')} (keep it on this host); send {csr} to the CA holder")
        return 0
    elif args.command == "sign":
        cert = keys.sign_request(args.csr, args.ca, args.out, args.days, keys.known_names(args.config))
        print(
            f"signed {keys.common_name(cert)!r}: {args.out} (serial {cert.serial_number:x}, valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d})"
        )
        return 0
    elif args.command == "revoke":
        keys.check_names([args.name])
        crl, serials = keys.revoke(args.ca, args.name)
        print(f"revoked {args.name!r} ({len(serials)} certificate(s)): distribute {crl} and set tls.crl to it")
        return 0
    print("\n".join(keys.describe(args.directory)))
    return 0


# --- model --------------------------------------------------------------------------------------


def model_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smpc model", description="Model directories: pack, sign, calibrate, verify.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="architecture + weights, or a save_pretrained directory -> a model directory")
    p.add_argument("architecture", help="a zoo name or module:factory, or a local save_pretrained directory")
    p.add_argument("--weights", type=Path, help="safetensors (or .pt state dict) file (architecture only)")
    p.add_argument("--input-shape", type=int, nargs="+", help="one sample's shape (architecture only)")
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="most rows in a batch; every batch up to it is packed (save_pretrained; default: %(default)s)",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=16,
        help="most tokens per sequence; every length up to it is served "
        "(save_pretrained text models; default: %(default)s)",
    )
    p.add_argument("--out", type=Path, required=True, help="the model directory to write (must not exist yet)")
    s = sub.add_parser("sign", help="sign a model directory with the owner's EC private key")
    s.add_argument("directory", type=Path)
    s.add_argument("--key", type=Path, required=True)
    c = sub.add_parser(
        "calibrate", help="run the owner's model on sample rows; store the ranges its approximations see"
    )
    c.add_argument("directory", type=Path, help="the owner's model directory (packed program or zoo model)")
    c.add_argument("--data", type=Path, required=True, help="sample rows, a data file as a data owner's")
    c.add_argument(
        "--margin", type=float, default=2.0, help="factor by which every range must be covered (default: %(default)s)"
    )
    v = sub.add_parser("verify", help="check a model directory's signature")
    v.add_argument("directory", type=Path)
    v.add_argument("--public-key", type=Path, required=True)
    return parser


def _model_pack(args: argparse.Namespace) -> None:
    from smpc.errors import ArtifactError
    from smpc.model import model_dir, owner, pack

    source = Path(args.architecture)
    if source.is_dir():  # a Hugging Face save_pretrained folder: its converted program
        if args.weights is not None or args.input_shape is not None:
            raise ArtifactError(f"{source}: --weights and --input-shape are for zoo architectures, not a directory")
        held = owner.pack_pretrained(source, args.out, args.batch, args.seq_len)
        rows = sorted({b.rows for b in held.buckets})
        seqs = sorted({b.seq for b in held.buckets if b.seq})
        print(f"packed {args.out} ({len(held.buckets)} shapes)")
        print(f"  batch sizes:      {', '.join(map(str, rows))} rows")
        print(f"  sequence lengths: {', '.join(map(str, seqs)) + ' tokens' if seqs else 'none (not a text model)'}")
        if held.tokenizer:
            print(f"  tokenizer:        {pack.TOKENIZER} (clients tokenize with it)")
    else:
        if args.weights is None or args.input_shape is None:
            raise ArtifactError(f"{args.architecture}: --weights and --input-shape are required for an architecture")
        model_dir.pack(args.architecture, args.weights, tuple(args.input_shape), args.out)
        print(f"packed {args.out} ({args.architecture})")
        # a zoo model is built by every party for the config's batch_size: no batch is fixed here
        print("  batch sizes:      any (the config's batch_size)")
        print(f"  one row's shape:  {list(args.input_shape)}")
    print(f"next: sign it with the owner's key: smpc model sign {args.out} --key OWNER.key")


def _model(args: argparse.Namespace) -> int:
    from smpc.model import calibrate, model_dir, owner

    if args.command == "pack":
        _model_pack(args)
    elif args.command == "sign":
        print(f"signed: {model_dir.sign(args.directory, args.key)}")
    elif args.command == "calibrate":
        calibration, path = owner.calibrate_directory(args.directory, args.data, args.margin)
        print(calibrate.describe(calibration))
        print(f"calibrated on {calibration.rows} rows (margin x{calibration.margin:g}): {path}")
        if (args.directory / model_dir.SIGNATURE).is_file():
            print(
                f"note: {args.directory} was signed before: sign it again (smpc model sign) so the calibration is covered"
            )
    else:
        manifest = model_dir.verify(args.directory, args.public_key)
        print("\n".join(model_dir.describe_verified(args.directory, args.public_key, manifest)))
    return 0


# --- open ---------------------------------------------------------------------------------------


def open_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smpc open", description="Decrypt a sealed file of your own: print a summary, or write its tensors."
    )
    parser.add_argument("file", type=Path, help="a .sealed file (outputs, or cached shares)")
    parser.add_argument("--key", type=Path, required=True, help="your storage key (NAME.storage)")
    parser.add_argument("--out", type=Path, help="write the outputs as safetensors (outputs only)")
    return parser


def _open(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from smpc.errors import ArtifactError
    from smpc.sealed import describe, load_key, unseal

    tensors, metadata = unseal(args.file, load_key(args.key))
    if args.out is None:
        print("\n".join(describe(tensors, metadata)))
        return 0
    if metadata.get("kind") != "outputs":
        raise ArtifactError(
            f"{args.file}: holds this party's shares of the model, kept sealed: no --out (summary only)"
        )
    if args.out.resolve() == args.file.resolve():
        raise ArtifactError(f"{args.out}: --out must not be the sealed file itself")
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, args.out)  # never half-written
    print(f"opened {args.file}: {len(tensors)} tensor(s) -> {args.out}")
    return 0


# --- bench --------------------------------------------------------------------------------------


def bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smpc bench", description="Measure every cell of a study (a YAML matrix of settings)."
    )
    parser.add_argument("study", help="study YAML file (see configs/studies/)")
    parser.add_argument("--out", metavar="DIR", help="results folder (default: bench-results/NAME)")
    parser.add_argument("--force", action="store_true", help="replace the results already in the folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _bench(args: argparse.Namespace) -> int:
    """Exit 0 when every cell succeeded, 2 when some failed (as a failed `smpc launch`) or on
    a bad study file, 130 on Ctrl-C (the report then covers the finished cells)."""
    from launch.study.bench import RESULTS, run_study
    from launch.study.spec import load_study

    study = load_study(args.study)
    out = Path(args.out) if args.out else Path("bench-results") / study.name
    try:
        records = run_study(study, out, progress=not args.no_progress, force=args.force)
    except KeyboardInterrupt:
        print("interrupted: all parties stopped; the report covers the finished cells", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = [r for r in records if r["status"] != "ok"]
    print(
        f"{len(records) - len(failed)} of {len(records)} cells measured; results in {out}/ "
        f"({RESULTS}, results.csv, report.md, plots)"
    )
    return EXIT_USAGE if failed else 0


# --- the table ----------------------------------------------------------------------------------

Parser = Callable[[], argparse.ArgumentParser]
Handler = Callable[[argparse.Namespace], int]

COMMANDS: dict[str, tuple[Parser, Handler]] = {
    "launch": (launch_parser, _launch),
    "party": (party_parser, _party),
    "dealer": (dealer_parser, _dealer),
    "serve": (serve_parser, _serve),
    "query": (query_parser, _query),
    "keys": (keys_parser, _keys),
    "model": (model_parser, _model),
    "open": (open_parser, _open),
    "bench": (bench_parser, _bench),
}

# the commands that run a party or the dealer: their daemon threads may be inside torch
PROCESSES = frozenset({"party", "dealer", "serve"})


def _guarded(parser: Parser, handler: Handler, rest: list[str]) -> int:
    """Run a subcommand so that every one exits alike: what it returns; 2 with one
    `error:` line for a user's mistake; 1 for anything unexpected."""
    from smpc.errors import SmpcError

    try:
        return handler(parser().parse_args(rest))
    except SmpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        traceback.print_exc()
        print(
            f"error: internal error ({type(exc).__name__}): please report it with the traceback above", file=sys.stderr
        )
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """`smpc COMMAND ...`: dispatch to the command's parser and handler (see _guarded for
    the exit codes). Called with no `argv` (the command line), a party, the dealer or a
    service does not return: it leaves through smpc.runfiles.leave."""
    # torch's C++ side logs every rendezvous retry and socket timeout to stderr; smpc
    # reports those failures itself in one line (a user's own setting wins). Set before
    # any command imports torch; the processes the launcher starts inherit it.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    program = argv is None  # this process is the command (not a caller's library call)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(_versions())
        return 0
    if command not in COMMANDS:
        print(f"smpc: unknown command {command!r}\n{USAGE}", file=sys.stderr, end="")
        return EXIT_USAGE
    code = _guarded(*COMMANDS[command], rest)
    if program and command in PROCESSES:
        from smpc.runfiles import leave

        leave(code)
    return code
