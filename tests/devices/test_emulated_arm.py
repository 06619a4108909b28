"""The Raspberry Pi's software stack, emulated (tests/devices/emulated.py): the aarch64 user space under qemu-user,
reached over ssh exactly as a real Pi is, with the device's CPU model in every process."""

from __future__ import annotations

import json

import pytest

HWCAP_CRC32, HWCAP_ASIMDDP, HWCAP_SVE = 1 << 7, 1 << 20, 1 << 22
PROBE = ("python3 -c 'import ctypes, platform; g = ctypes.CDLL(None).getauxval; g.restype = ctypes.c_ulong; "
         "print(platform.machine(), g(16))'")
@pytest.mark.parametrize("name", ["rpi4", "rpi5"])
def test_every_process_gets_the_devices_cpu_model(emulated_devices, name):
    """AT_HWCAP as the kernel (qemu) hands it to aarch64 processes: the A72 has no dot product, the A76 has it,
    neither has SVE (qemu's default 'max' CPU would), also for a process started with an empty environment."""
    dev = emulated_devices(name)
    for cmd in (PROBE, "env -i /opt/v/bin/" + PROBE):
        p = dev.run(cmd)
        assert p.returncode == 0, p.stderr
        machine, hwcap = p.stdout.split()
        assert machine == "aarch64"
        assert bool(int(hwcap) & HWCAP_ASIMDDP) == (name == "rpi5")
        assert int(hwcap) & HWCAP_CRC32 and not int(hwcap) & HWCAP_SVE
    said = json.loads(dev.run("cat /etc/edgeship/emulated.json").stdout)
    assert said["device"] == name and said["cpu"] == {"rpi4": "cortex-a72", "rpi5": "cortex-a76"}[name]
