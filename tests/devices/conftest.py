"""A REAL OpenSSH server on 127.0.0.1 for the device tests (no fakes): a throwaway host key, a
throwaway client key in authorized_keys, and a known_hosts file that holds the host key so
host-key checking stays on (StrictHostKeyChecking=yes)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import emulated
import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Loopback:
    user: str
    port: int
    key: Path
    known_hosts: Path
    config: Path  # an empty ssh client config: the user's ~/.ssh/config must not interfere
    python: str = sys.executable
    log: Path = field(default=None)

    @property
    def dest(self) -> str:
        return f"{self.user}@127.0.0.1"

    def cli_args(self) -> list[str]:
        """The `edgeship profile` options that reach this server."""
        return ["--ssh", self.dest, "--ssh-port", str(self.port), "--ssh-identity", str(self.key),
                "--ssh-config", str(self.config), "--ssh-option", f"UserKnownHostsFile={self.known_hosts}",
                "--ssh-option", "GlobalKnownHostsFile=/dev/null", "--ssh-option", "IdentitiesOnly=yes",
                "--remote-python", self.python]

    def target(self, **kw):
        from edgeship.devices.remote import SshTarget

        args = dict(dest=self.dest, port=self.port, identity=str(self.key), config=str(self.config),
                    options=[f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                             "IdentitiesOnly=yes"], python=self.python)
        args.update(kw)
        return SshTarget(**args)


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on."""
    return free_port()


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def loopback_sshd(tmp_path_factory):
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None or shutil.which("scp") is None:
        pytest.fail("OpenSSH server/client not installed: run scripts/bootstrap.sh test (make test does)")
    tmp = tmp_path_factory.mktemp("sshd")
    host_key, client_key = tmp / "host_ed25519", tmp / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    (tmp / "authorized_keys").write_text((tmp / "client_ed25519.pub").read_text())
    user, port = getpass.getuser(), free_port()
    (tmp / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {tmp}/sshd.pid
AuthorizedKeysFile {tmp}/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
AllowUsers {user}
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    pub = (tmp / "host_ed25519.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    (tmp / "ssh_config").write_text("")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation directory
    log = tmp / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on port {port}: {log.read_text()}")
            time.sleep(0.1)
    yield Loopback(user, port, client_key, tmp / "known_hosts", tmp / "ssh_config", log=log)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()



@pytest.fixture(scope="session")
def emulated_root():
    """The emulated device's root file system, built (a no-op when cached: .ci/run builds it before the tests)."""
    emulated.build()


@pytest.fixture(scope="session")
def emulated_devices(emulated_root):
    """``get(name)``: the session's emulated device (rpi4, rpi5), started on first use, stopped at the end."""
    started = {}

    def get(name: str) -> emulated.EmulatedDevice:
        if name not in started:
            started[name] = emulated.start(name)
        return started[name]

    yield get
    for dev in started.values():
        emulated.stop(dev)


@pytest.fixture
def emulated_rpi4(emulated_devices) -> emulated.EmulatedDevice:
    return emulated_devices("rpi4")


@pytest.fixture
def fresh_emulated_rpi4(emulated_root):
    """An emulated Pi 4 of its own: a clean device (its overlay holds nothing another test wrote), stopped after."""
    dev = emulated.start("rpi4")
    yield dev
    emulated.stop(dev)
