"""The fleet tier's hosts: network namespaces of the test, each with a real sshd, joined by a bridge.

Layout (names carry a random suffix; nothing reaches the uplink: no namespace has a default route):

    <br ns>: br0 ──┬── ctl  (the controller's namespace, 10.231.0.1)   chaos-inject --inventory runs here
                   ├── h1   10.231.0.11  sshd, state dir .../h1
                   ├── ...
                   └── hN   10.231.0.(10+N)

Each host's sshd (Debian openssh-server) listens on its own address with host keys made here, accepts root by a
key made here, and gives its sessions their own CHAOS_INJECT_RUN_DIR (sshd_config ``SetEnv``), so the hosts do not
share ledgers although they share this filesystem (and this checkout's venv: their chaos-inject is ours).
sshd is started by PID and stopped by PID; every namespace is removed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CHAOS = str(VENV_BIN / "chaos-inject")
SSHD = "/usr/sbin/sshd"
SUBNET = "10.231.0"
# namespace names start with this (several fleets on one machine, e.g. helpers sharing it, tell theirs apart)
NS_PREFIX = os.environ.get("FLEETKIT_NS_PREFIX", "cf")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def in_ns(ns: str, *cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout,
                          check=check)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo += children.get(child, [])
    return out


def processes_using(folder: Path) -> list[int]:
    """PIDs whose command line names ``folder`` (an sshd's config, a controller's SSH master socket)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if str(folder) in Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    out.append(int(entry))
            except OSError:
                continue
    return out


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "fleet tier needs root (network namespaces, sshd, BPF)"
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen") or not shutil.which("ssh"):
        return "no OpenSSH server/client (Debian openssh-server; run `sudo make setup`)"
    try:
        import ansible_runner  # noqa: F401
        import bcc  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not importable (run `sudo make setup`)"
    from chaosinject.kernel.headers import find_kernel_headers

    if find_kernel_headers() is None:
        return "no kernel headers for bcc (run `sudo make setup`)"
    return None


@dataclass
class SshHost:
    name: str
    ns: str
    address: str
    state_dir: Path
    conf: Path
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


@dataclass
class Fleet:
    work: Path
    suffix: str
    bridge_ns: str
    ctl_ns: str
    hosts: dict[str, SshHost] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    client_key: Path | None = None
    known_hosts: Path | None = None
    created_run_sshd: bool = False

    # -- inventory --------------------------------------------------------------------------------------
    def inventory(self, groups: dict[str, list[str]], *, extra_hosts: dict[str, dict] | None = None,
                  name: str = "hosts.yml") -> Path:
        """A YAML Ansible inventory of these hosts in ``groups``; ``extra_hosts``: more entries (host vars)."""
        children = {}
        for group, members in groups.items():
            children[group] = {"hosts": {h: {"ansible_host": self.hosts[h].address} if h in self.hosts
                                         else dict((extra_hosts or {})[h]) for h in members}}
        data = {"all": {"vars": {
            "ansible_user": "root", "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3", "chaos_inject_bin": CHAOS},
            "children": children}}
        path = self.work / name
        path.write_text(json.dumps(data, indent=1))    # JSON is YAML
        return path

    def controller(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
                   ) -> subprocess.CompletedProcess:
        """chaos-inject run in the controller's namespace (its temporary folders and its run directory, where
        its fleet ledger goes, in the test's); ``env``: more variables (e.g. a crash point)."""
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return in_ns(self.ctl_ns, "env", f"TMPDIR={self.tmp}", f"CHAOS_INJECT_RUN_DIR={self.ctl_run_dir}", *extra,
                     CHAOS, *args, timeout=timeout)

    @property
    def ctl_run_dir(self) -> Path:
        """The controller's run directory (its fleet ledgers in runs/): the test's, not this machine's."""
        return self.work / "ctl-run"

    @property
    def ctl_address(self) -> str:
        """The controller's address (its namespace's, on the bridge)."""
        return f"{SUBNET}.1"

    @property
    def tmp(self) -> Path:
        path = self.work / "tmp"
        path.mkdir(exist_ok=True)
        return path

    def spawn_controller(self, *args: str, log: Path) -> subprocess.Popen:
        handle = open(log, "w")
        # ip netns exec execs chaos-inject: the Popen's pid is the controller's
        return subprocess.Popen(["ip", "netns", "exec", self.ctl_ns, CHAOS, *args], stdout=handle,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "TMPDIR": str(self.tmp),
                                     "CHAOS_INJECT_RUN_DIR": str(self.ctl_run_dir)})

    def chaos(self, host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """chaos-inject on one host, as its sshd sessions see it (its namespace, its state directory)."""
        h = self.hosts[host]
        return in_ns(h.ns, "env", f"CHAOS_INJECT_RUN_DIR={h.state_dir}", CHAOS, *args, timeout=timeout)

    def live_runs(self, host: str) -> list[dict]:
        out = self.chaos(host, "status", "--json")
        return [r for r in json.loads(out.stdout or "[]") if r.get("alive")]

    def ledgers(self, host: str) -> list[Path]:
        return sorted((self.hosts[host].state_dir / "runs").glob("*.json"))

    def tc_state(self, host: str) -> str:
        """What tc shows on the host's interface (qdiscs and filters): empty-ish when clean."""
        ns = self.hosts[host].ns
        q = in_ns(ns, "tc", "qdisc", "show", "dev", "eth0").stdout
        f = in_ns(ns, "tc", "filter", "show", "dev", "eth0", "egress").stdout
        return (q + f).strip()

    def ping(self, src: str, dst: str, count: int = 5, interval: float = 0.2) -> list[float]:
        """RTTs in ms of ``count`` pings from host ``src`` to host ``dst``'s address (lost ones absent)."""
        out = in_ns(self.hosts[src].ns, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2",
                    self.hosts[dst].address, timeout=count * interval + 10).stdout
        return [float(line.split("time=")[1].split()[0]) for line in out.splitlines() if "time=" in line]

    # -- lifecycle ---------------------------------------------------------------------------------------
    def stop_sshd(self, host: str) -> None:
        """Its sessions first (children of the listener, by PID: a controller's ControlPersist connection keeps
        one), then the listener; while the namespace still exists, so every TCP connection closes."""
        h = self.hosts[host]
        if h.proc and h.proc.poll() is None:
            for pid in reversed(descendants(h.proc.pid)):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if h.proc and h.proc.poll() is None:
            h.proc.send_signal(signal.SIGTERM)
            try:
                h.proc.wait(10)
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait(5)
        h.proc = None

    def start_sshd(self, host: str) -> None:
        h = self.hosts[host]
        log = self.work / f"sshd-{host}.log"
        h.proc = subprocess.Popen(["ip", "netns", "exec", h.ns, SSHD, "-D", "-f", str(h.conf), "-E", str(log)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:   # listening? (ss in the host's namespace)
            if f"{h.address}:22" in in_ns(h.ns, "ss", "-ltnH").stdout:
                return
            if h.proc.poll() is not None:
                raise RuntimeError(f"sshd of {host} exited {h.proc.returncode}: {log.read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"sshd of {host} did not listen on {h.address}:22")

    def close(self) -> list[str]:
        """Stop every sshd (by PID), sweep each host's state, remove the namespaces; returns what was found
        left behind (ledgers, live runs) before the sweep, for the test to assert on."""
        problems = []
        for name in self.hosts:
            self.stop_sshd(name)
        for name, h in self.hosts.items():
            if h.ns in self.namespaces and self.ledgers(name):
                problems.append(f"{name}: ledgers {[p.name for p in self.ledgers(name)]}")
                self.chaos(name, "stop", "--all", timeout=30)
                self.chaos(name, "sweep", timeout=30)
        deadline = time.monotonic() + 10          # the controllers' SSH masters end with their connections
        while processes_using(self.work) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = processes_using(self.work)
        if left:
            problems.append(f"processes left: {left}")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)
        if self.created_run_sshd:
            try:
                os.rmdir("/run/sshd")
            except OSError:
                pass
        return problems


def make_fleet(work: Path, count: int = 4) -> Fleet:
    suffix = secrets.token_hex(3)
    fleet = Fleet(work=work, suffix=suffix, bridge_ns=f"{NS_PREFIX}-br-{suffix}", ctl_ns=f"{NS_PREFIX}-ctl-{suffix}")
    try:
        _build(fleet, count)
    except BaseException:
        fleet.close()
        raise
    return fleet


@contextmanager
def temporary_fleet(prefix: str, count: int):
    """A fleet of ``count`` hosts in a temporary folder (the bench scripts'): closed, what it left printed, and the
    folder removed on every exit."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    fleet = None
    try:
        fleet = make_fleet(work, count=count)
        yield fleet
    finally:
        if fleet is not None:
            problems = fleet.close()
            if problems:
                print(f"left behind (cleaned): {problems}")
        shutil.rmtree(work, ignore_errors=True)


def _build(fleet: Fleet, count: int) -> None:
    work = fleet.work
    ip("netns", "add", fleet.bridge_ns)
    fleet.namespaces.append(fleet.bridge_ns)
    ip("-n", fleet.bridge_ns, "link", "add", "br0", "type", "bridge")
    ip("-n", fleet.bridge_ns, "link", "set", "br0", "up")
    ip("-n", fleet.bridge_ns, "link", "set", "lo", "up")
    if not os.path.isdir("/run/sshd"):      # sshd's privilege separation directory (the package's service makes it)
        os.makedirs("/run/sshd", 0o755)
        fleet.created_run_sshd = True

    def attach(ns: str, port: str, address: str) -> None:
        ip("netns", "add", ns)
        fleet.namespaces.append(ns)
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", fleet.bridge_ns)
        ip("-n", fleet.bridge_ns, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")

    attach(fleet.ctl_ns, "pctl", fleet.ctl_address)
    keys = work / "keys"
    keys.mkdir()
    fleet.client_key = keys / "client"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-test", "-f", str(fleet.client_key)],
                   check=True)
    authorized = keys / "authorized_keys"
    authorized.write_text(Path(str(fleet.client_key) + ".pub").read_text())
    authorized.chmod(0o600)
    known = []
    for i in range(1, count + 1):
        name = f"h{i}"
        address = f"{SUBNET}.{10 + i}"
        ns = f"{NS_PREFIX}-{name}-{fleet.suffix}"
        attach(ns, f"p{i}", address)
        hostdir = work / name
        hostdir.mkdir()
        state = hostdir / "state"
        state.mkdir()
        hostkey = hostdir / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(hostkey)], check=True)
        known.append(f"{address} {Path(str(hostkey) + '.pub').read_text().split(' ', 2)[0]} "
                     f"{Path(str(hostkey) + '.pub').read_text().split(' ', 2)[1]}")
        conf = hostdir / "sshd_config"
        conf.write_text("\n".join([
            f"ListenAddress {address}:22", f"HostKey {hostkey}", f"PidFile {hostdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "X11Forwarding no", "PrintMotd no", "ClientAliveInterval 2", "ClientAliveCountMax 3", "MaxSessions 50", "MaxStartups 100:30:200",
            f"SetEnv CHAOS_INJECT_RUN_DIR={state}", "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
        fleet.hosts[name] = SshHost(name, ns, address, state, conf)
        fleet.start_sshd(name)
    fleet.known_hosts = keys / "known_hosts"
    fleet.known_hosts.write_text("\n".join(known) + "\n")
