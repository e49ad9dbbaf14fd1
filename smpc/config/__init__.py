"""The run configuration, in parts:

schema     one typed, frozen section per YAML mapping (Config and its sections)
rules      the cross-field rules, one named function each
plan       the settings a config resolves to (Config.plan), each computed in one place
documents  a parsed document validated against a schema, one line per problem
reader     the strict YAML reader that configs and studies share
load       load_config / parse_config: a file or document to a Config
"""

from smpc.config.documents import resolver, validate_document
from smpc.config.load import load_config, parse_config
from smpc.config.plan import Plan
from smpc.config.reader import read_yaml
from smpc.config.schema import (
    Config,
    DealerConfig,
    FidelityConfig,
    FunctionsConfig,
    ModelConfig,
    PartyConfig,
    ProtocolConfig,
    ServingConfig,
    TimeoutConfig,
    TlsConfig,
    valid_name,
)

__all__ = [
    "Config",
    "DealerConfig",
    "FidelityConfig",
    "FunctionsConfig",
    "ModelConfig",
    "PartyConfig",
    "Plan",
    "ProtocolConfig",
    "ServingConfig",
    "TimeoutConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
    "read_yaml",
    "resolver",
    "valid_name",
    "validate_document",
]
