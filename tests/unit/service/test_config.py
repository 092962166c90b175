"""service/config.py: what a flag or a VALISE_* variable makes the server do, or refuse."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from service.config import SETTINGS, Config, Setting, build_parser, parse_args
from service.kinds import INT, SECONDS, SIZE, SWITCH, TEXT, Kind
from storage import StorageConfig

GiB = 1024**3
MiB = 1024**2
KiB = 1024

SWITCHES = ("log-keys", "allow-persistence", "valkey-cluster", "proxy-protocol")

#: For every setting: text a flag or variable may carry, and the value it means.
#: Switches take no text on the command line; their variable says "yes".
SAMPLES: dict[str, tuple[str, Any]] = {
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("7171", 7171),
    "http_port": ("7172", 7172),
    "http_host": ("0.0.0.0", "0.0.0.0"),
    "valkey_url": ("valkey://10.0.0.5:6379/0", "valkey://10.0.0.5:6379/0"),
    "valkey_cluster": ("yes", True),
    "valkey_maxmemory": ("2GiB", 2 * GiB),
    "allow_persistence": ("yes", True),
    "chunk_size": ("4MiB", 4 * MiB),
    "max_frame": ("128KiB", 128 * KiB),
    "max_file_size": ("1TiB", 1024 * GiB),
    "default_ttl": ("600", 600),
    "max_ttl": ("7200", 7200),
    "staging_ttl": ("30", 30),
    "grace": ("0", 0),
    "resume_ttl": ("1800", 1800),
    "max_resumable": ("5", 5),
    "event_retention": ("5", 5),
    "idle_timeout": ("2.5", 2.5),
    "frame_timeout": ("5", 5.0),
    "min_rate": ("0", 0),
    "min_rate_window": ("10", 10.0),
    "storage_timeout": ("1.5", 1.5),
    "valkey_connections": ("8", 8),
    "max_connections": ("2", 2),
    "shutdown_grace": ("0", 0.0),
    "tokens": ("/etc/valise/tokens", "/etc/valise/tokens"),
    "tls_cert": ("cert.pem", "cert.pem"),
    "tls_key": ("key.pem", "key.pem"),
    "tls_client_ca": ("ca.pem", "ca.pem"),
    "valkey_tls_ca": ("valkey-ca.pem", "valkey-ca.pem"),
    "encryption_key_file": ("/etc/valise/keys", "/etc/valise/keys"),
    "log_keys": ("yes", True),
    "log_level": ("DEBUG", "DEBUG"),
    "log_format": ("json", "json"),
    "workers": ("4", 4),
    "metrics_port": ("9100", 9100),
    "metrics_host": ("0.0.0.0", "0.0.0.0"),
    "metrics_sample": ("0.5", 0.5),
    "failover_wait": ("0", 0.0),
    "loop": ("uvloop", "uvloop"),
    "proxy_protocol": ("on", True),
    "trusted_proxies": ("10.0.0.0/8, 192.0.2.7", "10.0.0.0/8, 192.0.2.7"),
}

#: Settings that are refused alone: what must come with them.
COMPANIONS = {
    "valkey_cluster": ("valkey_url",),
    "tls_cert": ("tls_key",),
    "tls_key": ("tls_cert",),
    "tls_client_ca": ("tls_cert", "tls_key"),
    "proxy_protocol": ("trusted_proxies",),
}

#: Text no setting of that sort accepts, on the command line or in a variable.
BAD_TEXT: dict[Kind, list[str]] = {
    INT: ["abc", "2.5", "", "7k"],
    SIZE: ["lots", "8 parsecs", "-1", "1.5MiB", ""],
    SECONDS: ["soon", "nan", "inf", "-inf", ""],
    TEXT: [""],
}

BY_FIELD = {s.field: s for s in SETTINGS}


def setting_ids(value: object) -> str:
    return value.key if isinstance(value, Setting) else repr(value)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own VALISE_* variables only, whatever the shell running them had."""
    for name in [n for n in os.environ if n.startswith("VALISE_")]:
        monkeypatch.delenv(name)


def refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str] | None = None
) -> str:
    """The one line a refused configuration prints (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as exited:
        parse_args(argv, {} if environ is None else environ)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("server.py: error: ")
    assert "Traceback" not in err
    return err.removeprefix("server.py: error: ").strip()


def as_flags(fields: dict[str, str]) -> list[str]:
    """A switch's flag takes no text: its samples all say "on"."""
    argv: list[str] = []
    for name, text in fields.items():
        s = BY_FIELD[name]
        argv += [s.flag] if s.kind is SWITCH else [s.flag, text]
    return argv


def as_environ(fields: dict[str, str]) -> dict[str, str]:
    return {BY_FIELD[name].env: text for name, text in fields.items()}


def with_companions(name: str) -> dict[str, str]:
    return {other: SAMPLES[other][0] for other in (name, *COMPANIONS.get(name, ()))}


def expected(fields: dict[str, str]) -> Config:
    return dataclasses.replace(Config(), **{name: SAMPLES[name][1] for name in fields})


def test_every_setting_has_a_sample_that_differs_from_its_default() -> None:
    assert set(SAMPLES) == {s.field for s in SETTINGS}
    assert set(SWITCHES) == {s.key for s in SETTINGS if s.kind is SWITCH}
    for s in SETTINGS:
        assert SAMPLES[s.field][1] != s.default, s.key


def test_no_flags_no_variables_is_config_defaults() -> None:
    assert parse_args([], {}) == Config()
    assert Config().port == 7070
    assert Config().chunk_size == 8 * MiB
    assert Config().log_keys is False
    assert Config().allow_persistence is False


@pytest.mark.parametrize("s", SETTINGS, ids=setting_ids)
def test_flag(s: Setting) -> None:
    fields = with_companions(s.field)
    assert parse_args(as_flags(fields), {}) == expected(fields)


@pytest.mark.parametrize("s", SETTINGS, ids=setting_ids)
def test_environment_twin(s: Setting) -> None:
    fields = with_companions(s.field)
    assert parse_args([], as_environ(fields)) == expected(fields)


def test_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALISE_PORT", "7171")
    assert parse_args([]).port == 7171


@pytest.mark.parametrize("flag", SWITCHES)
@pytest.mark.parametrize(
    ("word", "on"),
    [
        *[(w, True) for w in ("1", "true", "yes", "on", "TRUE", "Yes", "ON", "oN")],
        *[(w, False) for w in ("0", "false", "no", "off", "FALSE", "No", "OFF", "oFf")],
    ],
)
def test_switch_variable_words(flag: str, word: str, on: bool) -> None:
    s = BY_FIELD[flag.replace("-", "_")]
    environ = {
        s.env: word,
        "VALISE_VALKEY_URL": "valkey://127.0.0.1:6379",
        "VALISE_TRUSTED_PROXIES": "127.0.0.1",
    }
    assert getattr(parse_args([], environ), s.field) is on


@pytest.mark.parametrize("flag", SWITCHES)
@pytest.mark.parametrize("word", ["maybe", "", "2", "y", "n", " yes", "enable", "nein"])
def test_switch_variable_refuses_other_words(
    capsys: pytest.CaptureFixture[str], flag: str, word: str
) -> None:
    s = BY_FIELD[flag.replace("-", "_")]
    line = refused(capsys, [], {s.env: word})
    assert line.startswith(f"{s.env}: not a switch: {word!r}")


def bad_values() -> list[tuple[Setting, str]]:
    return [(s, text) for s in SETTINGS if s.kind is not SWITCH for text in BAD_TEXT[s.kind]]


@pytest.mark.parametrize(("s", "text"), bad_values(), ids=setting_ids)
def test_bad_variable_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], s: Setting, text: str
) -> None:
    line = refused(capsys, [], {s.env: text})
    assert line.startswith(f"{s.env}: ")
    assert repr(text) in line or "empty" in line


@pytest.mark.parametrize(("s", "text"), bad_values(), ids=setting_ids)
def test_bad_flag_value_is_one_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], s: Setting, text: str
) -> None:
    line = refused(capsys, [f"{s.flag}={text}"])
    assert line.startswith(f"argument {s.flag}: ")
    assert repr(text) in line or "empty" in line


def test_unknown_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, ["--chunk_size", "8MiB"]) == "unrecognized arguments: --chunk_size 8MiB"


#: (settings, what the one line says): each rule of _validate broken once.
BROKEN = [
    ({"port": "65536"}, "--port must be between 0 and 65535"),
    ({"port": "-1"}, "--port must be between 0 and 65535"),
    ({"max_frame": "65535"}, "--max-frame must be between 64KiB and 4GiB"),
    ({"max_frame": "4GiB"}, "--max-frame must be between 64KiB and 4GiB"),
    ({"chunk_size": "0"}, "--chunk-size must be between 1 byte and 512MiB"),
    ({"chunk_size": "513MiB"}, "--chunk-size must be between 1 byte and 512MiB"),
    ({"default_ttl": "0"}, "--default-ttl (0) must be between 1 and --max-ttl (86400)"),
    ({"default_ttl": "86401"}, "--default-ttl (86401) must be between 1 and --max-ttl (86400)"),
    ({"max_ttl": "3599"}, "--default-ttl (3600) must be between 1 and --max-ttl (3599)"),
    ({"staging_ttl": "2"}, "--staging-ttl must be at least 3 seconds"),
    ({"resume_ttl": "0"}, "--resume-ttl (0) must be between 1 and --max-ttl (86400)"),
    ({"resume_ttl": "86401"}, "--resume-ttl (86401) must be between 1 and --max-ttl (86400)"),
    ({"max_resumable": "0"}, "--max-resumable must be >= 1"),
    ({"grace": "-1"}, "--grace must be >= 0"),
    ({"event_retention": "0"}, "--event-retention must be >= 1"),
    ({"idle_timeout": "0"}, "--idle-timeout must be > 0"),
    ({"frame_timeout": "-1"}, "--frame-timeout must be > 0"),
    ({"storage_timeout": "0"}, "--storage-timeout must be > 0"),
    ({"min_rate_window": "0"}, "--min-rate-window must be > 0"),
    ({"shutdown_grace": "-0.5"}, "--shutdown-grace must be >= 0"),
    ({"tls_cert": "cert.pem"}, "--tls-cert and --tls-key go together"),
    ({"tls_key": "key.pem"}, "--tls-cert and --tls-key go together"),
    ({"tls_client_ca": "ca.pem"}, "--tls-client-ca needs --tls-cert and --tls-key"),
    ({"valkey_cluster": "yes"}, "--valkey-cluster needs --valkey-url (a node of the cluster)"),
    ({"max_connections": "0"}, "--max-connections must be >= 1"),
    ({"valkey_connections": "0"}, "--valkey-connections must be >= 1"),
    ({"workers": "0"}, "--workers must be between 1 and 256"),
    ({"workers": "257"}, "--workers must be between 1 and 256"),
    ({"metrics_port": "65536"}, "--metrics-port must be between 0 and 65535"),
    ({"http_port": "65536"}, "--http-port must be between 0 and 65535"),
    ({"metrics_port": "-1"}, "--metrics-port must be between 0 and 65535"),
    ({"metrics_sample": "0"}, "--metrics-sample must be > 0"),
    ({"failover_wait": "-1"}, "--failover-wait must be >= 0"),
    ({"loop": "trio"}, "--loop must be one of: asyncio, uvloop"),
    ({"log_level": "loud"}, "--log-level must be one of: debug, info, warning, error"),
    ({"log_format": "xml"}, "--log-format must be one of: text, json"),
    ({"proxy_protocol": "yes"}, "--proxy-protocol needs --trusted-proxies"),
    ({"trusted_proxies": "10.0.0.0/33"}, "--trusted-proxies must be addresses or networks"),
    ({"trusted_proxies": "balancer"}, "--trusted-proxies must be addresses or networks"),
    ({"trusted_proxies": "10.0.0.1,"}, "--trusted-proxies must be addresses or networks"),
]


@pytest.mark.parametrize(("fields", "message"), BROKEN)
def test_rule_broken_by_a_flag(
    capsys: pytest.CaptureFixture[str], fields: dict[str, str], message: str
) -> None:
    assert refused(capsys, as_flags(fields)).startswith(message)


@pytest.mark.parametrize(("fields", "message"), BROKEN)
def test_rule_broken_by_a_variable_names_the_variable(
    capsys: pytest.CaptureFixture[str], fields: dict[str, str], message: str
) -> None:
    (name,) = fields
    line = refused(capsys, [], as_environ(fields))
    assert line.startswith(f"{BY_FIELD[name].env}: {message}")


def test_http_port_0_is_refused_under_workers(capsys: pytest.CaptureFixture[str]) -> None:
    # Each worker would bind a port of its own: clients could reach only one.
    line = refused(capsys, ["--http-port", "0", "--workers", "2"])
    assert line.startswith("--http-port 0 needs --workers 1")
    assert parse_args(["--http-port", "7071", "--workers", "2"], {}).http_port == 7071


def test_http_host_defaults_to_host() -> None:
    assert parse_args(["--host", "0.0.0.0"], {}).http_bind == "0.0.0.0"
    assert parse_args(["--host", "0.0.0.0", "--http-host", "::1"], {}).http_bind == "::1"


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "0"],
        ["--port", "65535"],
        ["--max-frame", "64KiB"],
        ["--max-frame", str(2**32 - 1)],
        ["--chunk-size", "1"],
        ["--chunk-size", "512MiB"],
        ["--default-ttl", "1"],
        ["--default-ttl", "86400"],
        ["--staging-ttl", "3"],
        ["--resume-ttl", "1"],
        ["--resume-ttl", "86400"],
        ["--max-resumable", "1"],
        ["--grace", "0"],
        ["--shutdown-grace", "0"],
        ["--failover-wait", "0"],
        ["--workers", "256"],
        ["--metrics-port", "0"],
        ["--log-level", "WARNING"],
        ["--min-rate", "0"],
    ],
)
def test_edges_of_the_rules_are_accepted(argv: list[str]) -> None:
    parse_args(argv, {})


def test_flag_beats_variable() -> None:
    config = parse_args(["--port", "7272"], {"VALISE_PORT": "7171", "VALISE_WORKERS": "3"})
    assert (config.port, config.workers) == (7272, 3)
    assert parse_args(["--log-keys"], {"VALISE_LOG_KEYS": "no"}).log_keys is True


def test_bad_variable_is_refused_even_under_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["--port", "7272"], {"VALISE_PORT": "abc"})
    assert line == "VALISE_PORT: not a whole number: 'abc'"


def test_rule_between_two_sources_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["--default-ttl", "600"], {"VALISE_MAX_TTL": "60"})
    assert line == "VALISE_MAX_TTL: --default-ttl (600) must be between 1 and --max-ttl (60)"


def test_help_names_every_flag_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--help"], {})
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    for s in SETTINGS:
        assert s.flag in text
        assert s.env in text
    assert "--chunk-size SIZE bytes per Valkey chunk (default 8MiB; env VALISE_CHUNK_SIZE)" in text


def test_parser_has_one_flag_per_setting_and_config() -> None:
    flags = {o for a in build_parser()._actions for o in a.option_strings} - {"-h", "--help"}
    assert flags == {"--config", *(s.flag for s in SETTINGS)}


def test_config_is_frozen_slotted_and_replaceable() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    assert not hasattr(config, "__dict__")
    assert dataclasses.replace(config, port=0).port == 0
    assert config.port == 7070


def test_storage_config_carries_the_storage_settings() -> None:
    config = Config(
        chunk_size=MiB,
        staging_ttl=30,
        grace=5,
        storage_timeout=2.5,
        valkey_connections=7,
        allow_persistence=True,
        valkey_tls_ca="ca.pem",
        valkey_cluster=True,
        failover_wait=3.0,
        resume_ttl=600,
    )
    assert config.storage_config("valkeys://10.0.0.5:6379") == StorageConfig(
        url="valkeys://10.0.0.5:6379",
        chunk_size=MiB,
        staging_ttl=30,
        grace=5,
        timeout=2.5,
        max_connections=7,
        allow_persistence=True,
        tls_ca="ca.pem",
        cluster=True,
        failover_wait=3.0,
        resume_ttl=600,
    )


@pytest.fixture
def server_pem(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A server certificate, its key and the CA that signed it, as files."""
    ca = trustme.CA()
    cert = ca.issue_cert("valise.example")
    paths = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths


def test_tls_context(server_pem: tuple[Path, Path, Path]) -> None:
    cert, key, ca = (str(p) for p in server_pem)
    assert Config().tls_context() is None
    plain = Config(tls_cert=cert, tls_key=key).tls_context()
    assert plain is not None
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    mutual = Config(tls_cert=cert, tls_key=key, tls_client_ca=ca).tls_context()
    assert mutual is not None
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    assert len(mutual.get_ca_certs()) == 1


# --config FILE: TOML, keys named like the flags.

ROOT = Path(__file__).resolve().parents[3]


def toml_value(s: Setting, text: str) -> str:
    """A sample as TOML: sizes and text as strings, numbers bare, switches true."""
    if s.kind is SWITCH:
        return "true"
    if s.kind in (INT, SECONDS):
        return text
    return json.dumps(text)


def as_file(tmp_path: Path, fields: dict[str, str]) -> str:
    lines = [f"{BY_FIELD[n].key} = {toml_value(BY_FIELD[n], t)}" for n, t in fields.items()]
    return write(tmp_path, "\n".join(lines))


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "valise.toml"
    path.write_text(text + "\n")
    return str(path)


@pytest.mark.parametrize("s", SETTINGS, ids=setting_ids)
def test_file_key(tmp_path: Path, s: Setting) -> None:
    fields = with_companions(s.field)
    assert parse_args(["--config", as_file(tmp_path, fields)], {}) == expected(fields)


def test_file_named_by_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 7171")
    assert parse_args([], {"VALISE_CONFIG": path}).port == 7171


def test_config_flag_beats_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 7171")
    other = tmp_path / "other.toml"
    other.write_text("port = 7272\n")
    assert parse_args(["--config", path], {"VALISE_CONFIG": str(other)}).port == 7171


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("chunk-size = 4194304", 4 * MiB),
        ('chunk-size = "4MiB"', 4 * MiB),
        ('chunk-size = "4194304"', 4 * MiB),
        ("idle-timeout = 5", 5.0),
        ("idle-timeout = 0.25", 0.25),
        ("log-keys = false", False),
        ('log-level = "warning"', "warning"),
    ],
)
def test_file_value_spellings(tmp_path: Path, text: str, value: object) -> None:
    key = text.split(" =")[0]
    config = parse_args(["--config", write(tmp_path, text)], {})
    assert getattr(config, key.replace("-", "_")) == value


def test_precedence_flag_then_variable_then_file_then_default(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 7171\nworkers = 2\nmax-ttl = 7200")
    environ = {"VALISE_PORT": "7272", "VALISE_WORKERS": "3"}
    config = parse_args(["--config", path, "--port", "7373"], environ)
    assert (config.port, config.workers, config.max_ttl, config.grace) == (7373, 3, 7200, 60)


def test_switch_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, "log-keys = true")
    assert parse_args(["--config", path], {}).log_keys is True
    assert parse_args(["--config", path], {"VALISE_LOG_KEYS": "no"}).log_keys is False
    assert parse_args(["--config", path, "--log-keys"], {"VALISE_LOG_KEYS": "no"}).log_keys
    off = write(tmp_path, "log-keys = false")
    assert parse_args(["--config", off], {"VALISE_LOG_KEYS": "on"}).log_keys is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('chunk_size = "8MiB"', "unknown key 'chunk_size' (did you mean 'chunk-size'?)"),
        ("prot = 7070", "unknown key 'prot'"),
        ('config = "other.toml"', "unknown key 'config'"),
        ("[server]\nport = 7070", "unknown key 'server'"),
        ("--port = 7070", "unknown key '--port'"),
        ("port 7070", "not TOML: "),
        ("port = ", "not TOML: "),
        ('port = "7070"', "port: expected an integer, not a string '7070'"),
        ("port = true", "port: expected an integer, not a boolean"),
        ("port = 7070.0", "port: expected an integer, not a float 7070.0"),
        ("port = [7070]", "port: expected an integer, not an array"),
        ("workers = 1979-05-27", "workers: expected an integer, not a date or time"),
        ("chunk-size = 8.5", 'chunk-size: expected bytes (an integer) or a string like "8MiB"'),
        ('chunk-size = "lots"', "chunk-size: not a size: 'lots'"),
        ("chunk-size = -1", "chunk-size: not a size: '-1'"),
        ('idle-timeout = "soon"', "idle-timeout: expected a number of seconds, not a string"),
        ("idle-timeout = nan", "idle-timeout: not a finite number of seconds: 'nan'"),
        ("idle-timeout = inf", "idle-timeout: not a finite number of seconds: 'inf'"),
        ("idle-timeout = true", "idle-timeout: expected a number of seconds, not a boolean"),
        ('log-keys = "yes"', "log-keys: expected true or false, not a string 'yes'"),
        ("log-keys = 1", "log-keys: expected true or false, not an integer 1"),
        ("host = 127", "host: expected a string, not an integer 127"),
        ('host = ""', "host: empty"),
        ("workers = 0", "workers: --workers must be between 1 and 256"),
        ("max-ttl = 60", "max-ttl: --default-ttl (3600) must be between 1 and --max-ttl (60)"),
        ("valkey-cluster = true", "valkey-cluster: --valkey-cluster needs --valkey-url"),
    ],
)
def test_bad_file_is_one_line_naming_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    assert refused(capsys, ["--config", path]).startswith(f"{path}: {message}")


def test_file_error_is_refused_even_under_a_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, 'port = "7070"')
    assert refused(capsys, ["--config", path, "--port", "7171"]).startswith(f"{path}: port: ")


def test_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    assert (
        refused(capsys, ["--config", missing])
        == f"{missing}: cannot read: No such file or directory"
    )
    assert refused(capsys, [], {"VALISE_CONFIG": missing}).startswith(f"{missing}: cannot read")
    assert refused(capsys, [], {"VALISE_CONFIG": ""}).startswith("VALISE_CONFIG: empty")
    assert refused(capsys, ["--config", ""]).startswith("argument --config: empty")


def deployment_example() -> str:
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text.split("## 6. Configuration file", 1)[1]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


def test_deployment_example_is_every_key_with_its_default(tmp_path: Path) -> None:
    example = deployment_example()
    assert parse_args(["--config", write(tmp_path, example)], {}) == Config()
    keys = re.findall(r"^(?:# )?([a-z-]+) = ", example, flags=re.MULTILINE)
    assert sorted(keys) == sorted(s.key for s in SETTINGS)
    commented = re.findall(r"^# ([a-z-]+) = ", example, flags=re.MULTILINE)
    assert {BY_FIELD[k.replace("-", "_")].default for k in commented} == {None}
    # Uncommented, the examples are valid values of their keys.
    every = re.sub(r"^# ([a-z-]+ = )", r"\1", example, flags=re.MULTILINE)
    config = parse_args(["--config", write(tmp_path, every)], {})
    assert all(getattr(config, k.replace("-", "_")) is not None for k in commented)


# README's flag table: the flags and defaults users read are the parser's.


def readme_rows() -> list[tuple[list[str], str]]:
    """(flags, default cell) of each ``| `--flag` ... |`` row of README's table."""
    rows = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `--"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append((re.findall(r"`(--[a-z-]+)`", cells[0]), cells[1]))
    return rows


def readme_default(flag: str, shown: str) -> object:
    """What a default cell means: ``(...)`` is no value, a switch is off/on."""
    if shown.startswith("("):
        return None
    s = BY_FIELD[flag.removeprefix("--").replace("-", "_")]
    if s.kind is SWITCH:
        return {"off": False, "on": True}[shown]
    return s.kind.parse(shown)


def test_readme_flag_table_matches_the_parser() -> None:
    shown: dict[str, object] = {}
    for flags, cell in readme_rows():
        # `--a` / `--b` | 1 / 2: one default each; a single cell is the default of both.
        parts = cell.split(" / ") if len(flags) > 1 else [cell]
        parts = parts * len(flags) if len(parts) == 1 else parts
        assert len(parts) == len(flags), f"{flags}: one default per flag, not {cell!r}"
        for flag, part in zip(flags, parts, strict=True):
            assert flag not in shown, f"{flag} twice in README"
            shown[flag] = None if flag == "--config" else readme_default(flag, part)
    parser = {o for a in build_parser()._actions for o in a.option_strings} - {"-h", "--help"}
    assert set(shown) == parser
    defaults = parse_args([], {})
    actual = {s.flag: getattr(defaults, s.field) for s in SETTINGS} | {"--config": None}
    assert shown == actual
