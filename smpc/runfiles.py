"""Where a run's files live in run_dir, and how they are written (atomically)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn
from collections.abc import Callable

from smpc.config import Config, load_config


def result_path(config: Config, name: str) -> Path:
    """Process `name`'s result summary (JSON): a party's record, or the dealer's summary."""
    return config.run_dir / f"{name}.result.json"


def error_path(config: Config, name: str) -> Path:
    """Why process `name` (a party or "dealer") failed (JSON: party, message, time)."""
    return config.run_dir / f"{name}.error.json"


def output_path(config: Config, name: str) -> Path:
    """The outputs revealed to receiver `name`: safetensors, or sealed (AES-256-GCM)
    when the party has a storage key."""
    return config.run_dir / f"{name}.output.{'sealed' if _storage_key(config, name) else 'safetensors'}"


def _storage_key(config: Config, name: str) -> Path | None:
    # the dealer is no party: it has no storage key and receives no outputs
    return next((p.storage_key for p in config.parties if p.name == name), None)


CLASSES = "classes"  # the output file's one field at a `reveal: topK` receiver: [rows, k] indices


def save_outputs(config: Config, name: str, outputs: Any) -> Path:
    """Write receiver `name`'s revealed outputs, sealed under its storage key if it has one."""
    from smpc import artifacts, sealed

    path = output_path(config, name)
    key_file = _storage_key(config, name)
    if key_file is None:
        artifacts.save_outputs(path, outputs)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = outputs if isinstance(outputs, dict) else {"outputs": outputs}
        rows = len(next(iter(fields.values())))
        sealed.seal(path, fields, sealed.load_key(key_file), {"party": name, "kind": "outputs", "rows": rows})
    return path


def load_outputs(config: Config, name: str) -> Any:
    """Read back what save_outputs wrote (needs the party's storage key if sealed)."""
    from smpc import artifacts, sealed

    path = output_path(config, name)
    key_file = _storage_key(config, name)
    if key_file is None:
        return artifacts.load_outputs(path)
    return sealed.unseal(path, sealed.load_key(key_file))[0]["outputs"]


def load_output_fields(config: Config, name: str) -> dict[str, Any]:
    """Every output tensor receiver `name` was revealed, by output name."""
    from smpc import artifacts, sealed

    path = output_path(config, name)
    key_file = _storage_key(config, name)
    if key_file is None:
        return artifacts.load_output_fields(path)
    return sealed.unseal(path, sealed.load_key(key_file))[0]


def shares_path(config: Config, name: str) -> Path:
    """Party `name`'s sealed shares of the model (share_cache)."""
    return config.run_dir / f"{name}.shares.sealed"


def log_path(config: Config, name: str) -> Path:
    """Process `name`'s console output, as relayed by the launcher."""
    return config.run_dir / f"{name}.log"


def audit_path(config: Config, name: str) -> Path:
    """Process `name`'s audit log (JSON lines)."""
    return config.run_dir / f"{name}.audit.jsonl"


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def fail(config: Config | None, name: str, exc: BaseException) -> int:
    """How a party or the dealer process ends on an exception: one `error:` line, the
    failure record the launcher reads (PartyFailure), an audit entry; returns the exit
    code (2 for an SmpcError, 1 for anything else, whose traceback is printed for the log)."""
    from smpc.audit import AuditLog
    from smpc.errors import SmpcError
    from smpc.records import PartyFailure

    if not isinstance(exc, SmpcError):  # a peer vanished, a library gave up, a bug: report it, do not hang
        import traceback

        traceback.print_exception(exc)
    failure = PartyFailure.of(name, exc)
    print(f"error: {failure.message}", file=sys.stderr, flush=True)
    if config is not None:
        try:
            failure.write(error_path(config, name))
        except OSError:
            pass
        AuditLog(audit_path(config, name), name).record("failure", message=failure.message, code=failure.code)
    return 2 if isinstance(exc, SmpcError) else 1


def run_process(config_path: str | Path, name: str, body: Callable[[Config], None]) -> int:
    """Every process entry point (a party, a service's party, the dealer) runs through this:
    load the config, check that `name` is one of its processes, watch the parent (a
    launcher that dies takes its children along), run `body`; on an exception, `fail`.

    Returns the exit code (0, or what `fail` returns)."""
    from smpc import parent_watch

    config = None
    try:
        config = load_config(config_path)
        if name != "dealer":
            config.rank_of(name)
        parent_watch.watch(parent_watch.GRACE_FRACTION * config.timeouts.op_s)
        body(config)
    except Exception as exc:
        # an unknown name gets no error file: there is no such process to report on
        known = config is not None and (name == "dealer" or name in config.names)
        return fail(config if known else None, name, exc)
    return 0


def leave(code: int) -> NoReturn:
    """End this party's or the dealer's process with `code`, without the interpreter's
    finalization.

    Finalization ends each daemon thread that is still running with pthread_exit as it
    next takes the GIL. A thread inside a torch call at that moment (a peer's reader
    allocating a message, a handshake thread decoding one) takes it in a C++ destructor
    that cannot unwind, and libstdc++ aborts the process: SIGABRT ("terminate called
    without an active exception") after the run's files and error line were written, so
    a launcher saw a crash instead of exit 2. Everything the process writes is closed by
    then (runfiles writes files whole), so only stdio's buffers need flushing.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: the reader is gone
            pass
    os._exit(code)
