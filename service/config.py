"""Server settings: one table, the fields of :class:`Config`, read from flags,
``VALISE_<NAME>`` variables and a TOML file (``--config``), in that order.

Each field carries its default, its help and its :class:`Kind` (how text or a
TOML value becomes a value), so the parser, the environment, the file and the
defaults cannot disagree. A value goes through the same parser and the same
checks whatever its source: a bad one is a single line naming where it came
from and exit code 2, never a traceback and never a silent guess (with PHI,
``VALISE_LOG_KEYS=no`` must mean no).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import ssl
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

from protocol.frames import DEFAULT_MAX_FRAME, MIN_MAX_FRAME
from service.kinds import (
    INT,
    SECONDS,
    SIZE,
    SWITCH,
    TEXT,
    Kind,
    format_size,
    parse_text,
)
from service.logs import FORMATS
from storage import StorageConfig

PROG = "server.py"


def _setting(kind: Kind, default: Any, help: str) -> Any:
    return field(default=default, metadata={"kind": kind, "help": help})


#: --loop choices: the standard library's, or libuv's through uvloop.
LOOPS = ("asyncio", "uvloop")

#: --log-level choices (any case).
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting with its default: ``Config()`` is the server as shipped.

    A field is a flag (``chunk_size`` is ``--chunk-size``), a variable
    (``VALISE_CHUNK_SIZE``) and a file key (``chunk-size``, the flag's name).
    Instances are not checked: :func:`parse_args` is.
    """

    host: str = _setting(TEXT, "127.0.0.1", "address to listen on")
    port: int = _setting(INT, 7070, "TCP port; 0 picks a free one")
    http_port: int | None = _setting(INT, None, "also serve HTTP/1.1 on this port; 0: a free one")
    http_host: str | None = _setting(TEXT, None, "address for --http-port (default: --host)")
    valkey_url: str | None = _setting(TEXT, None, "Valkey to use; default: start a private one")
    valkey_cluster: bool = _setting(SWITCH, False, "--valkey-url is a node of a Valkey Cluster")
    valkey_maxmemory: int | None = _setting(SIZE, None, "private Valkey's cap (default: RAM/2)")
    allow_persistence: bool = _setting(SWITCH, False, "accept a Valkey with RDB/AOF on")
    chunk_size: int = _setting(SIZE, 8 * 1024**2, "bytes per Valkey chunk")
    max_frame: int = _setting(SIZE, DEFAULT_MAX_FRAME, "largest DATA payload")
    max_file_size: int = _setting(SIZE, 64 * 1024**3, "largest file")
    default_ttl: int = _setting(INT, 3600, "seconds a file lives when PUT gives no ttl")
    max_ttl: int = _setting(INT, 86400, "largest ttl a PUT may ask for")
    staging_ttl: int = _setting(INT, 120, "seconds an abandoned upload's chunks survive")
    grace: int = _setting(INT, 60, "seconds a replaced or deleted version stays readable")
    resume_ttl: int = _setting(INT, 3600, "seconds a resumable upload waits for its RESUME")
    max_resumable: int = _setting(INT, 100, "open resumable uploads per namespace")
    event_retention: int = _setting(INT, 3600, "seconds change events are kept for a replay")
    idle_timeout: float = _setting(SECONDS, 60.0, "seconds a connection may wait silent")
    frame_timeout: float = _setting(SECONDS, 30.0, "seconds a started frame may take to arrive")
    min_rate: int = _setting(SIZE, 1024, "slowest upload accepted, bytes/s (0: off)")
    min_rate_window: float = _setting(SECONDS, 30.0, "seconds the upload rate is averaged over")
    storage_timeout: float = _setting(SECONDS, 30.0, "seconds to wait for Valkey")
    valkey_connections: int = _setting(INT, 64, "Valkey connection pool size")
    max_connections: int = _setting(INT, 1024, "client connections served at once")
    shutdown_grace: float = _setting(SECONDS, 30.0, "seconds transfers may finish after SIGTERM")
    tokens: str | None = _setting(TEXT, None, "tokens file: '<token> <namespace> <rw|ro>' per line")
    tls_cert: str | None = _setting(TEXT, None, "PEM certificate chain: listen with TLS 1.2+")
    tls_key: str | None = _setting(TEXT, None, "PEM private key for --tls-cert")
    tls_client_ca: str | None = _setting(TEXT, None, "require client certs signed by this CA")
    valkey_tls_ca: str | None = _setting(TEXT, None, "CA for a valkeys:// Valkey URL")
    encryption_key_file: str | None = _setting(
        TEXT, None, "'<key-id> <base64 key>' lines: Valkey holds only AES-256-GCM ciphertext"
    )
    log_keys: bool = _setting(SWITCH, False, "log key names in clear (they can be PHI)")
    log_level: str = _setting(TEXT, "info", "debug, info, warning or error")
    log_format: str = _setting(TEXT, "text", "text (for people) or json (one object per line)")
    workers: int = _setting(INT, 1, "processes on the port (SO_REUSEPORT); limits are per worker")
    metrics_port: int | None = _setting(INT, None, "serve Prometheus /metrics and /healthz here")
    metrics_host: str = _setting(TEXT, "127.0.0.1", "address for --metrics-port")
    metrics_sample: float = _setting(SECONDS, 60.0, "seconds between samples of stored bytes")
    failover_wait: float = _setting(SECONDS, 10.0, "cluster: seconds I/O rides out a failover")
    loop: str = _setting(TEXT, "asyncio", "event loop: asyncio or uvloop (faster small requests)")
    proxy_protocol: bool = _setting(
        SWITCH, False, "a PROXY v1/v2 header names each client (needs --trusted-proxies)"
    )
    trusted_proxies: str | None = _setting(
        TEXT, None, "comma-separated CIDRs the PROXY header is accepted from; others refused"
    )

    @property
    def http_bind(self) -> str:
        """The address the HTTP door listens on: --http-host, else --host."""
        return self.host if self.http_host is None else self.http_host

    def tls_context(self) -> ssl.SSLContext | None:
        """TLS 1.2+ for the listener; with --tls-client-ca, client certificates required."""
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_client_ca is not None:
            context.load_verify_locations(self.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def storage_config(self, url: str) -> StorageConfig:
        """What storage/ needs of these settings, for the Valkey at ``url``."""
        return StorageConfig(
            url=url,
            chunk_size=self.chunk_size,
            staging_ttl=self.staging_ttl,
            grace=self.grace,
            timeout=self.storage_timeout,
            max_connections=self.valkey_connections,
            allow_persistence=self.allow_persistence,
            tls_ca=self.valkey_tls_ca,
            cluster=self.valkey_cluster,
            failover_wait=self.failover_wait,
            resume_ttl=self.resume_ttl,
            event_retention=self.event_retention,
            encryption_key_file=self.encryption_key_file,
        )


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the table: a field of :class:`Config` and its three names."""

    field: str
    kind: Kind
    default: Any
    help: str

    @property
    def key(self) -> str:
        return self.field.replace("_", "-")

    @property
    def flag(self) -> str:
        return "--" + self.key

    @property
    def env(self) -> str:
        return "VALISE_" + self.field.upper()


SETTINGS = tuple(
    Setting(f.name, f.metadata["kind"], f.default, f.metadata["help"]) for f in fields(Config)
)
_BY_FIELD = {s.field: s for s in SETTINGS}
_BY_KEY = {s.key: s for s in SETTINGS}


class ConfigError(ValueError):
    """A value breaks a rule; ``fields`` are the settings the rule is about."""

    def __init__(self, fields: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.fields = fields


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and exit code 2: the usage block would bury the line that matters."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Flags from :data:`SETTINGS`; a flag not given is absent from the namespace."""
    parser = _Parser(
        prog=PROG,
        description="Valise file server",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config",
        type=parse_text,
        metavar="FILE",
        help='TOML file of settings named like the flags: chunk-size = "8MiB" (env VALISE_CONFIG)',
    )
    for s in SETTINGS:
        shown = "" if s.default is None or s.kind is SWITCH else f"default {_show(s)}; "
        help = f"{s.help} ({shown}env {s.env})".replace("%", "%%")
        if s.kind is SWITCH:
            parser.add_argument(s.flag, action="store_true", help=help)
        else:
            parser.add_argument(s.flag, type=s.kind.parse, metavar=s.kind.metavar, help=help)
    return parser


def _show(s: Setting) -> str:
    return format_size(s.default) if s.kind is SIZE else str(s.default)


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Each setting from its flag, else its variable, else the file, else its default."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = flags.pop("config", None)
    raw_path = environ.get("VALISE_CONFIG")
    if raw_path is not None:
        checked = _read(parser, "VALISE_CONFIG", TEXT, raw_path)
        path = checked if path is None else path
    if path is not None:
        values = _read_file(parser, path)
        sources = {name: f"{path}: {_BY_FIELD[name].key}" for name in values}
    for s in SETTINGS:
        raw = environ.get(s.env)
        if raw is not None:  # checked even when a flag overrides it: it is still wrong
            values[s.field] = _read(parser, s.env, s.kind, raw)
            sources[s.field] = s.env
    values |= flags
    sources |= {name: "" for name in flags}  # a flag names itself in the message
    config = Config(**values)
    try:
        _validate(config)
    except ConfigError as exc:
        # Name the variable or the file key that brought the bad value, if one did.
        where = [sources[f] + ": " for f in exc.fields if sources.get(f)]
        parser.error(f"{where[0] if where else ''}{exc}")
    return config


def _read(parser: argparse.ArgumentParser, source: str, kind: Kind, raw: str) -> Any:
    try:
        return kind.parse(raw)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{source}: {exc}")


def _read_file(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The settings a TOML file gives; an unknown key or a wrong type is an error naming it."""
    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except OSError as exc:
        parser.error(f"{path}: cannot read: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        parser.error(f"{path}: not TOML: {exc}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        s = _BY_KEY.get(key)
        if s is None:
            dashed = key.replace("_", "-")
            hint = f" (did you mean {dashed!r}?)" if dashed in _BY_KEY else ""
            parser.error(f"{path}: unknown key {key!r}{hint}")
        try:
            values[s.field] = s.kind.from_file(value)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{path}: {key}: {exc}")
    return values


def _cidrs(text: str) -> bool:
    try:
        return all(ipaddress.ip_network(part.strip()) for part in text.split(","))
    except ValueError:
        return False


def _rule(ok: bool, message: str, *fields: str) -> None:
    if not ok:
        raise ConfigError(fields, message)


def _validate(c: Config) -> None:
    """The rules every source of a value obeys; the first broken one is raised."""
    for s in SETTINGS:
        _rule(getattr(c, s.field) != "", f"{s.flag} must not be empty", s.field)
    for name in ("port", "http_port", "metrics_port"):
        port = getattr(c, name)
        flag = _BY_FIELD[name].flag
        _rule(port is None or 0 <= port <= 65535, f"{flag} must be between 0 and 65535", name)
    _rule(
        MIN_MAX_FRAME <= c.max_frame < 2**32,
        f"--max-frame must be between {format_size(MIN_MAX_FRAME)} and 4GiB",
        "max_frame",
    )
    _rule(
        1 <= c.chunk_size <= 512 * 1024**2,
        "--chunk-size must be between 1 byte and 512MiB (Valkey's value limit)",
        "chunk_size",
    )
    _rule(
        1 <= c.default_ttl <= c.max_ttl,
        f"--default-ttl ({c.default_ttl}) must be between 1 and --max-ttl ({c.max_ttl})",
        "default_ttl",
        "max_ttl",
    )
    _rule(c.staging_ttl >= 3, "--staging-ttl must be at least 3 seconds", "staging_ttl")
    _rule(
        1 <= c.resume_ttl <= c.max_ttl,
        f"--resume-ttl ({c.resume_ttl}) must be between 1 and --max-ttl ({c.max_ttl})",
        "resume_ttl",
        "max_ttl",
    )
    _rule(c.max_resumable >= 1, "--max-resumable must be >= 1", "max_resumable")
    _rule(c.event_retention >= 1, "--event-retention must be >= 1", "event_retention")
    for name in ("grace", "shutdown_grace", "failover_wait"):
        _rule(getattr(c, name) >= 0, f"{_BY_FIELD[name].flag} must be >= 0", name)
    for name in ("idle_timeout", "frame_timeout", "storage_timeout", "min_rate_window"):
        _rule(getattr(c, name) > 0, f"{_BY_FIELD[name].flag} must be > 0", name)
    _rule(c.metrics_sample > 0, "--metrics-sample must be > 0", "metrics_sample")
    _rule(
        (c.tls_cert is None) == (c.tls_key is None),
        "--tls-cert and --tls-key go together",
        "tls_cert",
        "tls_key",
    )
    _rule(
        c.tls_client_ca is None or c.tls_cert is not None,
        "--tls-client-ca needs --tls-cert and --tls-key",
        "tls_client_ca",
    )
    _rule(
        not c.valkey_cluster or c.valkey_url is not None,
        "--valkey-cluster needs --valkey-url (a node of the cluster)",
        "valkey_cluster",
    )
    for name in ("max_connections", "valkey_connections"):
        _rule(getattr(c, name) >= 1, f"{_BY_FIELD[name].flag} must be >= 1", name)
    _rule(1 <= c.workers <= 256, "--workers must be between 1 and 256", "workers")
    _rule(
        c.http_port != 0 or c.workers == 1,
        "--http-port 0 needs --workers 1 (each worker would pick its own port)",
        "http_port",
        "workers",
    )
    _rule(c.loop in LOOPS, f"--loop must be one of: {', '.join(LOOPS)}", "loop")
    _rule(
        not c.proxy_protocol or c.trusted_proxies is not None,
        "--proxy-protocol needs --trusted-proxies (the balancers' addresses)",
        "proxy_protocol",
    )
    _rule(
        c.trusted_proxies is None or _cidrs(c.trusted_proxies),
        "--trusted-proxies must be addresses or networks like 10.0.0.0/8,192.0.2.7",
        "trusted_proxies",
    )
    _rule(
        c.log_format in FORMATS,
        f"--log-format must be one of: {', '.join(FORMATS)}",
        "log_format",
    )
    _rule(
        c.log_level.lower() in LOG_LEVELS,
        f"--log-level must be one of: {', '.join(LOG_LEVELS)}",
        "log_level",
    )
