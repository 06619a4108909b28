"""`edgeship provision --ssh user@host`: set up a device's runtime environment from wheels fetched on this
machine for the device's CPU architecture and Python, so a device without internet access works.

1. The device's own ``python3`` says (over ssh) what it is: CPU architecture, Python version, C library, and
   which packages the provisioned venv (``~/.edgeship/venv``) already holds.
2. What is missing (numpy and the runtime package of each format, at this machine's versions, so the device
   runs what export verified here) is fetched HERE: ``pip download --only-binary=:all: --platform
   manylinux_2_<17..glibc>_<arch> --python-version X.Y --implementation cp --abi cpXY``, from PyPI or from a
   local directory (``--wheels DIR``), plus pip itself.
3. The wheels are copied to a temporary directory on the device; the venv is made with ``python3 -m venv
   --without-pip`` and pip, run from its wheel, installs them with ``--no-index``: the device never reaches
   the network, and pip checks every wheel against the device's own interpreter.

Idempotent: a device that already has every package at the wanted version gets nothing copied. `edgeship
profile --ssh` uses the venv's Python on that device without being told.

adb (Android) is not provisioned: ``profile --adb`` runs TFLite's ``benchmark_model``, a native binary per
Android ABI that TensorFlow publishes outside PyPI; it is pushed once by hand (``--benchmark-binary``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from edgeship.devices.remote import DEVICE_VENV, SshTarget, quote_cmd, remote_tempdir, remove_remote, ssh_run
from edgeship.errors import EdgeshipError
from edgeship.progress import info
from edgeship.targets.base import formats as backend_formats

REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?([<>=!~]=?[A-Za-z0-9.*+!_-]+)?")
ARCHES = {"aarch64": "aarch64", "arm64": "aarch64", "x86_64": "x86_64", "amd64": "x86_64", "armv7l": "armv7l"}
# run by the device's python3: what it is, and what its provisioned venv holds (dist-info read, nothing imported)
PROBE = r"""
import glob, json, os, platform, re, sys
venv = os.path.join(os.path.expanduser("~"), sys.argv[1])
have = {}
try:
    from importlib import metadata
    for site in glob.glob(os.path.join(venv, "lib", "python*", "site-packages")):
        for d in metadata.distributions(path=[site]):
            have[re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower()] = d.version
except ImportError:
    pass
libc = platform.libc_ver()
print("EDGESHIP_PROBE " + json.dumps({
    "machine": platform.machine(), "python": "%d.%d" % sys.version_info[:2],
    "implementation": sys.implementation.name, "libc": libc[0], "libc_version": libc[1],
    "venv": venv, "venv_python": os.access(os.path.join(venv, "bin", "python"), os.X_OK), "installed": have}))
"""
# on the device: the venv (once), then pip from its wheel installs from the copied wheels only
INSTALL = ('set -e; py=$1 venv=$2 wheels=$3 pip=$4; shift 4; [ -x "$venv/bin/python" ] || "$py" -m venv '
           '--without-pip "$venv"; "$venv/bin/python" "$pip/pip" install --no-index --find-links "$wheels" '
           '--no-compile --disable-pip-version-check --no-warn-script-location -q "$@"')


@dataclass
class Provisioned:
    where: str
    python: str  # the venv's Python on the device (what profile uses there)
    platform: str  # e.g. cp311 manylinux_2_36_aarch64
    packages: dict[str, str]  # name -> version, everything requested
    installed: list[str] = field(default_factory=list)  # names installed now (the others were there already)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wanted(fmts: list[str], packages: list[str]) -> dict[str, str]:
    """{package: pinned spec}: numpy and each format's first runtime package at this machine's versions (so the
    device runs what export verified here), then ``packages`` (``name==version`` or a bare name) on top."""
    known = backend_formats()
    unknown = [f for f in fmts if f not in known or not known[f].device_loader]
    if unknown:
        runs = sorted(f for f, b in known.items() if b.device_loader)
        raise EdgeshipError(f"no device runtime for format {', '.join(unknown)}", f"use --format {' or '.join(runs)}")
    out = {}
    for pkg in ["numpy", *(known[f].runtime_modules[0][1] for f in fmts)]:
        try:
            out[norm(pkg)] = f"{pkg}=={metadata.version(pkg)}"
        except metadata.PackageNotFoundError:
            out[norm(pkg)] = pkg  # not installed here: the newest release for the device
    for spec in (p.replace(" ", "") for p in packages):
        if not REQUIREMENT.fullmatch(spec):
            raise EdgeshipError(f"--package {spec!r} is not a package requirement",
                                "e.g. --package onnxruntime==1.20.1")
        out[norm(re.split(r"[<>=!~\[]", spec, maxsplit=1)[0])] = spec
    return out


def probe(target: SshTarget, timeout: float) -> dict:
    python = target.python or "python3"
    p = ssh_run(target.ssh_cmd(quote_cmd([python, "-c", PROBE, DEVICE_VENV])), target, timeout, "asking the device")
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("EDGESHIP_PROBE ")), None)
    if p.returncode == 127 or line is None:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeshipError(f"{python} on {target.where} cannot run ({last[:200]})",
                            "install Python 3 on the device (Debian/Raspberry Pi OS: apt install python3), or "
                            "point --remote-python at it")
    return json.loads(line.split(" ", 1)[1])


def platforms(dev: dict, where: str) -> list[str]:
    """The wheel platform tags the device's interpreter accepts (every manylinux up to its glibc)."""
    arch = ARCHES.get(dev["machine"])
    if dev["implementation"] != "cpython" or dev["libc"] != "glibc" or arch is None:
        raise EdgeshipError(f"{where} runs {dev['implementation']} on {dev['machine']} with "
                            f"{dev['libc'] or 'an unknown C library'}: no runtime wheels for it",
                            "provision supports CPython on glibc Linux (aarch64, x86_64, armv7l)")
    minor = int((dev["libc_version"] or "2.17").split(".")[1])
    return [f"manylinux2014_{arch}", *(f"manylinux_2_{m}_{arch}" for m in range(17, minor + 1))]


def download(specs: list[str], dev: dict, tags: list[str], into: Path, wheels: Path | None, timeout: float) -> None:
    """Fetch ``specs`` (and their dependencies) for the device's platform into ``into``, on this machine."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
           *(a for t in tags for a in ("--platform", t)), "--python-version", dev["python"],
           "--implementation", "cp", "--abi", f"cp{dev['python'].replace('.', '')}", "-d", str(into),
           *(["--no-index", "--find-links", str(wheels)] if wheels else []), *specs]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EdgeshipError(f"pip download did not finish within {timeout:.0f} s", "check the network") from None
    if p.returncode != 0:
        lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip().startswith("ERROR")] or ["no output"]
        raise EdgeshipError(f"no wheels for {dev['machine']} Python {dev['python']} ({tags[-1]}): {lines[0][:300]}",
                            "pin another version with --package NAME==VERSION, drop the format with --format, or "
                            "give --wheels DIR holding the wheels")


def provision(target: SshTarget, fmts: list[str], packages: list[str] | None = None, wheels: Path | None = None,
              timeout: float = 1800) -> Provisioned:
    """Install numpy and the runtimes of ``fmts`` into ``~/.edgeship/venv`` on the device, from wheels fetched
    here; nothing when they are there already."""
    if wheels is not None and not Path(wheels).is_dir():
        raise EdgeshipError(f"--wheels {wheels} is not a directory", "give a directory of .whl files")
    want = wanted(fmts, list(packages or []))
    dev = probe(target, timeout)
    tags = platforms(dev, target.where)
    where_py = f"{dev['venv']}/bin/python"
    plat = f"cp{dev['python'].replace('.', '')} {tags[-1]}"

    def satisfied(have: dict) -> list[str]:
        return [n for n, spec in want.items() if n in have and ("==" not in spec or have[n] == spec.split("==")[1])]

    missing = [spec for n, spec in want.items() if n not in satisfied(dev["installed"])]
    if not missing and dev["venv_python"]:
        info(f"{target.where}: already provisioned ({plat}): nothing to do")
        return Provisioned(target.where, where_py, plat, {n: dev["installed"][n] for n in want})
    with tempfile.TemporaryDirectory(prefix="edgeship-wheels-") as tmp:
        stage = Path(tmp) / "wheels"
        info(f"{target.where}: {dev['machine']}, Python {dev['python']}, glibc {dev['libc_version']}: fetching "
             f"{', '.join(missing)} here for {plat}")
        download([*missing, "pip"], dev, tags, stage, wheels, timeout)
        pip_wheel = next(iter(sorted(stage.glob("pip-*.whl"))), None)
        if pip_wheel is None:
            raise EdgeshipError("pip download fetched no pip wheel", "give --wheels DIR holding a pip wheel too")
        remote = remote_tempdir(target, timeout, "edgeship-wheels")
        try:
            size = sum(f.stat().st_size for f in stage.iterdir()) / 1e6
            info(f"copying {len(list(stage.iterdir()))} wheels ({size:.0f} MB) to {target.where}")
            p = ssh_run(target.scp_cmd([str(stage)], remote), target, timeout, "copying the wheels")
            if p.returncode != 0:
                raise EdgeshipError(f"copying the wheels to {target.where} failed: {p.stderr.strip()[:200]}",
                                    "check free space on the device")
            w = f"{remote}/wheels"
            info(f"installing on {target.where} into {dev['venv']} (pip --no-index)")
            p = ssh_run(target.ssh_cmd(quote_cmd(["sh", "-c", INSTALL, "sh", target.python or "python3", dev["venv"], w,
                                               f"{w}/{pip_wheel.name}", *missing])), target, timeout, "pip install")
            if p.returncode != 0:
                last = (p.stderr.strip().splitlines() or ["no output"])[-1]
                raise EdgeshipError(f"installing on {target.where} failed: {last[:300]}",
                                    "on Debian without the venv module: apt install python3-venv; else read the "
                                    "error above")
        finally:
            remove_remote(target, remote, timeout)
    after = probe(target, timeout)
    still = [want[n] for n in want if n not in satisfied(after["installed"])]
    if still:
        raise EdgeshipError(f"{target.where} still lacks {', '.join(still)} after installing",
                            "run again with --debug and read pip's output")
    return Provisioned(target.where, where_py, plat, {n: after["installed"][n] for n in want},
                       [n for n in want if want[n] in missing])
