"""The strict YAML reader that configs and studies share: yaml.safe_load, refusing a
repeated key, too many aliases, an oversized, binary or non-UTF-8 file, each in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from smpc.errors import ConfigError

MAX_YAML_BYTES = 1 << 20  # a config (or study) file larger than this is refused before parsing
MAX_ALIASES = 32


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is an error
    (safe_load keeps the last one silently), and aliases are bounded: each alias is a
    reference, so a few nested ones make a document that takes exponential time to walk
    (the "billion laughs")."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"more than {MAX_ALIASES} aliases (*name): refused",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]  # unannotated in PyYAML's stubs
                )
        return super().compose_node(parent, index)


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """Read a YAML file with safe_load; a missing, oversized, binary or malformed file is
    one ConfigError line."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {what} file of {path.stat().st_size} bytes; expected at most {MAX_YAML_BYTES}")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text (UTF-8) {what} file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text {what} file: it holds NUL bytes")
    try:
        loader = _StrictLoader(text)  # yaml.safe_load, refusing repeated keys
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML: {where}{problem}") from None
