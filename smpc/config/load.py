"""A run configuration from a YAML file or a parsed document: validated against the
schema and its rules, relative paths resolved against the file's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smpc.config.documents import resolver, validate_document
from smpc.config.reader import read_yaml
from smpc.config.schema import Config, TlsConfig
from smpc.errors import ConfigError


def parse_config(data: Any, source: str | Path = "<memory>") -> Config:
    """Validate a parsed YAML document; relative paths resolve against `source`'s folder.

    Args:
        data: the document (a mapping).
        source: the file it came from, used in messages and to resolve paths.

    Returns:
        The frozen Config; raises ConfigError listing every problem, one per line.
    """
    config = validate_document(Config, data, source)
    resolve = resolver(source)
    parties = tuple(
        p.model_copy(
            update={"weights": resolve(p.weights), "data": resolve(p.data), "storage_key": resolve(p.storage_key)}
        )
        for p in config.parties
    )
    tls = (
        None
        if config.tls is None
        else TlsConfig(ca=resolve(config.tls.ca), certs=resolve(config.tls.certs), crl=resolve(config.tls.crl))
    )
    model = config.model.model_copy(
        update={"public_key": resolve(config.model.public_key), "program": resolve(config.model.program)}
    )
    run_dir = resolve(config.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{source}: run_dir: {run_dir} is a file; expected a folder (created when missing)")
    return config.model_copy(
        update={"parties": parties, "run_dir": run_dir, "tls": tls, "model": model, "source": Path(source)}
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file (safe_load only).

    Args:
        path: the YAML file.

    Returns:
        The frozen Config; raises ConfigError with one line per problem.
    """
    return parse_config(read_yaml(path), Path(path))
