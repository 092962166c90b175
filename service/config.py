"""Server settings: command-line flags, each also read from ``VALISE_<NAME>``."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from protocol.frames import DEFAULT_MAX_FRAME, MIN_MAX_FRAME

_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3}
_UNITS |= {"gib": 1024**3, "t": 1024**4, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """``1048576``, ``1MiB``, ``64GiB``: plain bytes or a binary suffix."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 8MiB or 1048576)")
    return int(match.group(1)) * _UNITS[unit]


#: What a switch's environment twin may say, in any case; anything else is refused.
SWITCH_WORDS = {"1": True, "true": True, "yes": True, "on": True}
SWITCH_WORDS |= {"0": False, "false": False, "no": False, "off": False}


def parse_switch(text: str) -> bool:
    """``VALISE_LOG_KEYS=no`` must mean no: a word we do not know is an error, not "on"."""
    try:
        return SWITCH_WORDS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"not a switch: {text!r} (use 1/0, true/false, yes/no or on/off)"
        ) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and exit code 2: the usage block would bury the line that matters."""
        self.exit(2, f"{self.prog}: error: {message}\n")


#: --loop choices: the standard library's, or libuv's through uvloop.
LOOPS = ("asyncio", "uvloop")


@dataclass(frozen=True, slots=True)
class Config:
    host: str
    port: int
    valkey_url: str | None
    valkey_maxmemory: int | None
    chunk_size: int
    max_frame: int
    max_file_size: int
    default_ttl: int
    max_ttl: int
    staging_ttl: int
    grace: int
    idle_timeout: float
    frame_timeout: float
    min_rate: int
    min_rate_window: float
    storage_timeout: float
    valkey_connections: int
    max_connections: int
    shutdown_grace: float
    allow_persistence: bool
    tokens: str | None
    tls_cert: str | None
    tls_key: str | None
    tls_client_ca: str | None
    valkey_tls_ca: str | None
    valkey_cluster: bool
    log_keys: bool
    log_level: str
    workers: int
    metrics_port: int | None
    metrics_host: str
    metrics_sample: float
    failover_wait: float
    loop: str


def _flag(
    parser: argparse.ArgumentParser,
    name: str,
    kind: Callable[[str], Any],
    default: Any,
    help: str,
) -> None:
    env = "VALISE_" + name.upper().replace("-", "_")
    value = _environ(parser, env, kind, default)
    parser.add_argument(f"--{name}", type=kind, default=value, help=f"{help} (env {env})")


def _switch(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """An on/off flag; VALISE_<NAME> says 1/0, true/false, yes/no or on/off."""
    env = "VALISE_" + name.upper().replace("-", "_")
    on = _environ(parser, env, parse_switch, False)
    parser.add_argument(f"--{name}", action="store_true", default=on, help=f"{help} (env {env})")


def _environ(
    parser: argparse.ArgumentParser, env: str, kind: Callable[[str], Any], default: Any
) -> Any:
    """VALISE_<NAME> read as its flag would be; a bad value is a usage error naming it."""
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        return kind(raw)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{env}: {exc}")
    except ValueError:
        parser.error(f"{env}: invalid {getattr(kind, '__name__', 'value')} value: {raw!r}")


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = _Parser(prog="server.py", description="Valise file server")
    _flag(p, "host", str, "127.0.0.1", "address to listen on")
    _flag(p, "port", int, 7070, "TCP port; 0 picks a free one")
    _flag(p, "valkey-url", str, None, "Valkey to use; default: start a private one")
    _flag(p, "valkey-maxmemory", parse_size, None, "private Valkey's maxmemory (default: RAM/2)")
    _flag(p, "chunk-size", parse_size, 8 * 1024**2, "bytes per Valkey chunk")
    _flag(p, "max-frame", parse_size, DEFAULT_MAX_FRAME, "largest DATA payload")
    _flag(p, "max-file-size", parse_size, 64 * 1024**3, "largest file")
    _flag(p, "default-ttl", int, 3600, "seconds a file lives when PUT gives no ttl")
    _flag(p, "max-ttl", int, 86400, "largest ttl a PUT may ask for")
    _flag(p, "staging-ttl", int, 120, "seconds an abandoned upload's chunks survive")
    _flag(p, "grace", int, 60, "seconds a replaced or deleted version stays readable")
    _flag(p, "idle-timeout", float, 60.0, "seconds a connection may wait silent")
    _flag(p, "frame-timeout", float, 30.0, "seconds a started frame may take to arrive")
    _flag(p, "min-rate", parse_size, 1024, "slowest upload accepted, bytes/s (0: off)")
    _flag(p, "min-rate-window", float, 30.0, "seconds of waiting the upload rate is averaged over")
    _flag(p, "storage-timeout", float, 30.0, "seconds to wait for Valkey")
    _flag(p, "valkey-connections", int, 64, "Valkey connection pool size")
    _flag(p, "max-connections", int, 1024, "client connections served at once")
    _flag(p, "shutdown-grace", float, 30.0, "seconds transfers may finish after SIGTERM")
    _flag(p, "tokens", str, None, "tokens file: '<token> <namespace> <rw|ro>' per line")
    _flag(p, "tls-cert", str, None, "PEM certificate chain: listen with TLS 1.2+")
    _flag(p, "tls-key", str, None, "PEM private key for --tls-cert")
    _flag(p, "tls-client-ca", str, None, "require client certificates signed by this CA")
    _flag(p, "valkey-tls-ca", str, None, "CA for a valkeys:// Valkey URL")
    _flag(p, "log-level", str, "info", "debug, info, warning or error")
    _flag(p, "workers", int, 1, "processes serving the port (SO_REUSEPORT); limits are per worker")
    _flag(
        p, "metrics-port", int, None, "serve Prometheus /metrics and /healthz here (default: off)"
    )
    _flag(p, "metrics-host", str, "127.0.0.1", "address for --metrics-port")
    _flag(p, "metrics-sample", float, 60.0, "seconds between samples of files/bytes per namespace")
    _flag(
        p, "failover-wait", float, 10.0, "cluster: seconds a chunk read/write rides out a failover"
    )
    _flag(p, "loop", str, "asyncio", "event loop: asyncio or uvloop (faster small requests)")
    _switch(p, "valkey-cluster", "--valkey-url is a Valkey Cluster node (valkey-py ValkeyCluster)")
    _switch(p, "allow-persistence", "accept a Valkey with RDB/AOF on")
    _switch(p, "log-keys", "log key names in clear (they can be PHI; default: a keyed hash)")
    ns = p.parse_args(argv)
    config = Config(**{k: v for k, v in vars(ns).items()})
    _validate(p, config)
    return config


def _validate(p: argparse.ArgumentParser, c: Config) -> None:
    if c.max_frame < MIN_MAX_FRAME or c.max_frame >= 2**32:
        p.error(f"--max-frame must be between {MIN_MAX_FRAME} and 4 GiB")
    if not 1 <= c.chunk_size <= 512 * 1024**2:
        p.error("--chunk-size must be between 1 byte and 512 MiB (Valkey's value limit)")
    if not 1 <= c.default_ttl <= c.max_ttl:
        p.error("--default-ttl must be between 1 and --max-ttl")
    if c.staging_ttl < 3 or c.grace < 0 or c.idle_timeout <= 0 or c.storage_timeout <= 0:
        p.error("--staging-ttl must be >= 3 s, --grace >= 0, timeouts > 0")
    if c.frame_timeout <= 0 or c.min_rate_window <= 0:
        p.error("--frame-timeout and --min-rate-window must be > 0")
    if (c.tls_cert is None) != (c.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if c.tls_client_ca is not None and c.tls_cert is None:
        p.error("--tls-client-ca needs --tls-cert and --tls-key")
    if c.valkey_cluster and c.valkey_url is None:
        p.error("--valkey-cluster needs --valkey-url (a node of the cluster)")
    if c.max_connections < 1 or c.valkey_connections < 1:
        p.error("--max-connections and --valkey-connections must be >= 1")
    if not 1 <= c.workers <= 256:
        p.error("--workers must be between 1 and 256")
    if c.metrics_port is not None and not 0 <= c.metrics_port <= 65535:
        p.error("--metrics-port must be between 0 and 65535")
    if c.failover_wait < 0:
        p.error("--failover-wait must be >= 0")
    if c.metrics_sample <= 0:
        p.error("--metrics-sample must be > 0")
    if c.loop not in LOOPS:
        p.error(f"--loop must be one of: {', '.join(LOOPS)}")
