"""Two or three "hosts" on one machine: network namespaces joined by a bridge, for MPI runs across TCP.

:class:`Cluster` creates ``hosts`` network namespaces ``<prefix>-h0 .. -h{n-1}``, each with one interface
``eth0`` (address ``10.213.0.(i+1)/24``) whose veth peer sits on a bridge in a namespace of its own
(``<prefix>-br``). The 10.213.0.0/24 addresses exist only inside these namespaces: nothing is added to the
machine's own namespace, so no traffic can leave it. ``mpiexec`` (MPICH hydra) runs inside host 0 and
starts the proxies on the other hosts through a launcher script (``-launcher ssh -launcher-exec``) that
enters the host's namespace with ``ip netns exec`` instead of ssh; UCX is told to use TCP on ``eth0``
only (``UCX_TLS=tcp,self``), so every RMA operation between ranks on different hosts crosses a real TCP
connection over the veth links (``counters()`` reads their byte counts to prove it). ``delay(us)`` puts a
``netem`` delay on every host's egress, so a round trip between two hosts gains ``2 · us``.

Used by tests/mpi/test_netns.py and benchmarks/mpi_scaling.py (``--netns``); docs/mpi.md gives the same
recipe as shell commands. Needs root (CAP_NET_ADMIN) and iproute2; :func:`unavailable` says why not.

Command line (sets up, runs one command with ``{mpiexec}`` replaced, tears down even on failure)::

    python tests/mpi/netns.py --hosts 3 --delay-us 100 -- -n 3 python -m leashed.runtime.mpi_backend ...
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SUBNET = "10.213.0"
#: environment given to every rank: UCX over TCP on the namespace's interface only (no shared memory)
RANK_ENV = {"MPIR_CVAR_CH4_NETMOD": "ucx", "UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "eth0",
            "UCX_WARN_UNUSED_ENV_VARS": "n", "UCX_LOG_LEVEL": "error"}


def find_mpiexec() -> str | None:
    """The mpiexec next to this Python (the ``mpich`` wheel puts it there), else the one on PATH."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can): not root, no ``ip``/``tc``, or refused."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to create network namespaces"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_NET_ADMIN)"
    probe = f"lsdprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is refused here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


_LAUNCHER = """#!/bin/sh
# hydra's ssh launcher calls: SCRIPT [-x ...] HOST "COMMAND"; enter HOST's namespace instead of ssh
while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
host=$1; shift
case "$host" in
{cases}
  *) echo "netns launcher: unknown host $host" >&2; exit 1;;
esac
exec ip netns exec "$ns" sh -c "$*"
"""


class NetemUnavailable(RuntimeError):
    """The kernel has no netem qdisc (``sch_netem``), so no delay can be put on the links."""


class Cluster:
    """``hosts`` namespaces on one bridge; a context manager that always deletes them (module docstring)."""

    def __init__(self, hosts: int = 3, prefix: str | None = None) -> None:
        if not 2 <= hosts <= 8:
            raise ValueError("hosts must be 2..8")
        self.n = hosts
        self.prefix = prefix or f"lsd{os.getpid() % 100000}"
        self.names = [f"{self.prefix}-h{i}" for i in range(hosts)]
        self.bridge = f"{self.prefix}-br"
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(hosts)]
        self.dir = Path(tempfile.mkdtemp(prefix="leashed-netns-"))
        self.launcher = self.dir / "launch.sh"
        self.delay_us = 0.0
        self._made: list[str] = []

    # ------------------------------------------------------------ set-up and tear-down
    def up(self) -> Cluster:
        self.down()  # leftovers of a killed earlier run with the same names
        try:
            for ns in (self.bridge, *self.names):
                _ip("netns", "add", ns)
                self._made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge, "link", "set", "br0", "up")
            for i, (ns, addr) in enumerate(zip(self.names, self.addresses, strict=True)):
                _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"v{i}",
                    "netns", self.bridge)
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", self.bridge, "link", "set", f"v{i}", "master", "br0")
                _ip("-n", self.bridge, "link", "set", f"v{i}", "up")
        except BaseException:
            self.down()
            raise
        cases = "\n".join(f"  {a}) ns={n};;" for a, n in zip(self.addresses, self.names, strict=True))
        self.launcher.write_text(_LAUNCHER.format(cases=cases))
        self.launcher.chmod(self.launcher.stat().st_mode | stat.S_IXUSR)
        return self

    def down(self) -> None:
        """Delete the namespaces (their veths and the bridge go with them); safe to call twice."""
        for ns in (*self.names, self.bridge):
            _ip("netns", "del", ns, check=False)
        self._made.clear()

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ links
    def delay(self, us: float) -> None:
        """netem delay of ``us`` µs on every host's egress (0: remove it); a round trip gains 2·us."""
        for ns in self.names:
            _ip("-n", ns, "link", "set", "eth0", "up")
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root"],
                           capture_output=True, check=False, timeout=30)
            if us > 0:
                made = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root",
                                       "netem", "delay", f"{us:g}us", "limit", "100000"],
                                      capture_output=True, text=True, check=False, timeout=30)
                if made.returncode != 0:
                    raise NetemUnavailable(f"cannot add a netem delay ({made.stderr.strip()}): this kernel "
                                           f"lacks the sch_netem qdisc (modprobe sch_netem)")
        self.delay_us = float(us)

    def counters(self) -> dict[str, dict[str, int]]:
        """Bytes and packets through each host's ``eth0`` (``ip -s link``): proof that traffic crossed."""
        out = {}
        for ns in self.names:
            data = json.loads(_ip("-s", "-j", "-n", ns, "link", "show", "eth0").stdout)[0]["stats64"]
            out[ns] = {"rx_bytes": int(data["rx"]["bytes"]), "tx_bytes": int(data["tx"]["bytes"]),
                       "rx_packets": int(data["rx"]["packets"]), "tx_packets": int(data["tx"]["packets"])}
        return out

    # ------------------------------------------------------------ launching
    def mpiexec(self, ranks_per_host: list[int], mpiexec: str | None = None,
                env: dict[str, str] | None = None) -> list[str]:
        """The command prefix that starts ``sum(ranks_per_host)`` ranks, rank 0 first on host 0: append
        ``python -m ...``. mpiexec itself runs in host 0's namespace."""
        exe = mpiexec or find_mpiexec()
        if exe is None:
            raise FileNotFoundError("no mpiexec")
        hosts = ",".join(f"{a}:{k}" for a, k in zip(self.addresses, ranks_per_host, strict=False) if k > 0)
        args = ["ip", "netns", "exec", self.names[0], exe, "-launcher", "ssh", "-launcher-exec",
                str(self.launcher), "-hosts", hosts, "-n", str(sum(ranks_per_host))]
        for key, value in {**RANK_ENV, **(env or {})}.items():
            args += ["-genv", key, value]
        return args


def spread(ranks: int, hosts: int) -> list[int]:
    """Ranks per host: rank 0 alone on host 0, the workers round-robin on the others."""
    per = [1] + [0] * (hosts - 1)
    for k in range(ranks - 1):
        per[1 + k % (hosts - 1)] += 1
    return per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netns.py", description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--delay-us", type=float, default=0.0)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- -n P COMMAND...: mpiexec's arguments")
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if len(rest) < 3 or rest[0] != "-n" or not rest[1].isdigit():
        parser.error("give `-- -n P COMMAND ...`")
    why = unavailable()
    if why:
        sys.stderr.write(f"netns.py: error: {why}\n")
        return 2
    with Cluster(args.hosts) as cluster:
        cluster.delay(args.delay_us)
        before = cluster.counters()
        cmd = cluster.mpiexec(spread(int(rest[1]), args.hosts)) + rest[2:]
        sys.stderr.write("netns.py: " + shlex.join(cmd) + "\n")
        rc = subprocess.run(cmd, check=False).returncode
        after = cluster.counters()
        moved: dict[str, Any] = {ns: after[ns]["rx_bytes"] + after[ns]["tx_bytes"]
                                 - before[ns]["rx_bytes"] - before[ns]["tx_bytes"] for ns in after}
        sys.stderr.write(f"netns.py: bytes through eth0 per host: {moved}\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
