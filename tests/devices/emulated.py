"""The emulated Raspberry Pi of scripts/arm64_device.sh, for the tests: Debian arm64 user space under qemu-user
with the aarch64 runtimes (the host's pins), an sshd on 127.0.0.1 per instance whose every process runs with the
device's CPU model (cortex-a72 for rpi4, cortex-a76 for rpi5), and a RAM overlay, so each start is a clean device.

`build` (cached outside the repository, about 5 minutes the first time on a machine; .ci/run runs it before the
tests) happens once, an instance starts in about 3 s and is stopped at teardown. EDGESHIP_ARM64=skip skips the
tests that need it (a local opt-out, printed in pytest's summary; CI never sets it). Anything else that keeps
the device from being built or started fails the tests: they never skip silently.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass

import pytest

from helpers import REPO

SCRIPT = REPO / "scripts" / "arm64_device.sh"
BUILD_TIMEOUT = 25 * 60  # ~5 min cold on 2 busy cores; a slow mirror gets the rest
SSH_TIMEOUT = 300  # anything run in the emulated device: python start-up alone takes seconds


@dataclass
class EmulatedDevice:
    name: str  # rpi4, rpi5
    port: int
    identity: str
    known_hosts: str
    wheels: str  # the aarch64 wheels the root was built from (and pip's), on the host

    @property
    def dest(self) -> str:
        return "root@127.0.0.1"

    @property
    def ssh_opts(self) -> list[str]:
        return ["-F", "/dev/null", "-p", str(self.port), "-i", self.identity, "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"]

    def cli_args(self) -> list[str]:
        """The ssh options of `edgeship profile` and `provision` that reach this device."""
        return ["--ssh", self.dest, "--ssh-port", str(self.port), "--ssh-identity", self.identity,
                "--ssh-config", "/dev/null", "--ssh-option", f"UserKnownHostsFile={self.known_hosts}",
                "--ssh-option", "GlobalKnownHostsFile=/dev/null", "--ssh-option", "IdentitiesOnly=yes",
                "--connect-timeout", "30"]

    def run(self, command: str, timeout: float = SSH_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *self.ssh_opts, self.dest, command], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


def _script(*args: str, timeout: float) -> str:
    p = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        pytest.fail(f"scripts/arm64_device.sh {' '.join(args)} failed (exit {p.returncode}):\n{p.stderr[-3000:]}\n"
                    "(EDGESHIP_ARM64=skip skips the emulated-device tests locally)")
    return p.stdout


def start(name: str) -> EmulatedDevice:
    port = _script("start", "--device", name, "--port", "auto", timeout=240).split()[-1]
    env = {}
    for line in _script("env", "--port", port, timeout=60).splitlines():
        key, _, value = line.partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return EmulatedDevice(name, int(port), env["EDGESHIP_ARM64_IDENTITY"], env["EDGESHIP_ARM64_KNOWN_HOSTS"],
                          env["EDGESHIP_ARM64_WHEELS"])


def stop(dev: EmulatedDevice) -> None:
    subprocess.run([str(SCRIPT), "stop", "--port", str(dev.port)], capture_output=True, timeout=60)


def build() -> None:
    if os.environ.get("EDGESHIP_ARM64") == "skip":
        pytest.skip("EDGESHIP_ARM64=skip: the emulated aarch64 device is not built or started")
    _script("build", timeout=BUILD_TIMEOUT)
