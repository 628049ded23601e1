"""The configuration: schema (one place for every key), loading, secrets, and what is printed from it.

``load_config(path)`` = ``read_config_file`` -> ``parse_config`` (pure) -> ``read_secrets``.
"""

from mail_monitor.config.durations import format_duration, human_duration, parse_duration
from mail_monitor.config.kinds import IpAddress
from mail_monitor.config.load import (
    DEFAULT_CONFIG_PATH,
    load_config,
    parse_config,
    read_config_file,
    read_secrets,
    resolve_token_commands,
)
from mail_monitor.config.model import (
    Account,
    BlocklistSettings,
    Config,
    DnsServer,
    DomainSettings,
    Endpoint,
    HeartbeatSettings,
    ImapEndpoint,
    MonitorSettings,
    NtfySettings,
    PostfixQueueSettings,
    Provider,
    ReportsSettings,
    Route,
    RouteMode,
    TlsMode,
    default_instance,
    oauth2_token,
)
from mail_monitor.config.schema import AUTH_METHODS, DEFAULT_BLOCKLISTS, DEFAULT_PORTS, TLS_MODES
from mail_monitor.config.secrets import (
    MAX_SECRET_BYTES,
    Secret,
    SecretError,
    expand_credentials_path,
    read_secret_file,
    run_token_command,
)
from mail_monitor.errors import ConfigError

__all__ = [
    "AUTH_METHODS",
    "DEFAULT_BLOCKLISTS",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_PORTS",
    "MAX_SECRET_BYTES",
    "TLS_MODES",
    "Account",
    "BlocklistSettings",
    "Config",
    "ConfigError",
    "DnsServer",
    "DomainSettings",
    "Endpoint",
    "HeartbeatSettings",
    "ImapEndpoint",
    "IpAddress",
    "MonitorSettings",
    "NtfySettings",
    "PostfixQueueSettings",
    "Provider",
    "ReportsSettings",
    "Route",
    "RouteMode",
    "Secret",
    "SecretError",
    "TlsMode",
    "default_instance",
    "expand_credentials_path",
    "format_duration",
    "human_duration",
    "load_config",
    "oauth2_token",
    "parse_config",
    "parse_duration",
    "read_config_file",
    "read_secret_file",
    "read_secrets",
    "resolve_token_commands",
    "run_token_command",
]
