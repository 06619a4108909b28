"""Measuring on a real device over SSH (any Linux board with Python); Android phones over adb: ``android.py``.

A bundle (each artifact's files + model.json, bench_runner.py, which needs only numpy and the runtime package, and
the run's verification samples with each artifact's outputs on them on the host) is copied with the system's
``scp`` into a fresh ``mktemp -d`` directory, run with ``ssh`` once per artifact (a fresh process each) at the
device profile's thread count, and removed afterwards. The runner also runs the samples, so each measurement
carries the device runtime's top-1 and agreement with the host (``Measurement.verification``), and, after the
timed runs, profiles each layer with the device runtime's own counters as on the host (``Measurement.profile``:
where the time goes on the device). The device's Python is the one ``edgeship provision`` set up
(``~/.edgeship/venv``) when there is one, else ``python3``, unless ``--remote-python`` names one. Measurements are
marked ``source: device``; a device that says it is emulated (bench_runner's facts) gives ``source: emulated``
measurements: verification only, one timed run, no latency, memory or layer times recorded. Host-key checking
stays on (``StrictHostKeyChecking=yes`` unless the user overrides it with ``--ssh-option``), ``BatchMode`` forbids
password prompts, ``ConnectTimeout`` bounds an unreachable host. Every argument that reaches the remote shell is
``shlex.quote``d. A changed host key is said to have changed (with the fingerprint ssh saw) and never answered
with advice to accept it. Everything the device sends back is checked (``measure.parse_runner_output``,
``record.Measurement``) and printed without terminal escapes; the bundle holds only files that lie inside the run
directory.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeship.devices.measure import (
    DEFAULT_PROFILE_RUNS,
    KEYS,
    RUNNER,
    RUNNER_FILES,
    RunArtifact,
    parse_runner_output,
    runner_args,
    runner_failure,
    said,
    to_measurement,
)
from edgeship.errors import EdgeshipError, TargetError
from edgeship.record import Measurement
from edgeship.rundir import inside

SAFE_REMOTE_DIR = re.compile(r"^/[A-Za-z0-9_./-]+$")
SAFE_PYTHON = re.compile(r"^[A-Za-z0-9_./+-]{1,512}$")
DEVICE_VENV = ".edgeship/venv"  # under the device user's home: where `edgeship provision` installs the runtimes
# the device's Python: the provisioned venv's when there is one, else python3 (a fixed script: no user input)
FIND_PYTHON = (f'p="$HOME/{DEVICE_VENV}/bin/python"; [ -x "$p" ] || p=python3; echo "EDGESHIP_PYTHON=$p"; '
               'exec "$p" "$@"')
EMULATED_METHOD = ("EMULATED device (qemu-user on another CPU): its own runtime ran the artifact (verification); "
                   "emulated timings and memory say nothing about the device and are not recorded")
TIMINGS = tuple(k for k in KEYS if k.endswith(("_ms", "_mb")))  # samples_ms too
DEST = re.compile(r"^(?:[A-Za-z0-9._][A-Za-z0-9._-]*@)?(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])$")


# ----------------------------------------------------------------------------------- SSH
@dataclass
class SshTarget:
    dest: str  # user@host or host
    port: int | None = None
    identity: str | None = None
    config: str | None = None  # ssh -F FILE
    options: list[str] = field(default_factory=list)  # KEY=VALUE, passed as -o; they win over the defaults
    connect_timeout: int = 10
    python: str | None = None  # the device's Python (None: the provisioned venv's, else python3)
    ssh: str = "ssh"
    scp: str = "scp"

    def __post_init__(self):
        if not DEST.match(self.dest):
            raise EdgeshipError(f"not an ssh destination: {self.dest!r}",
                                "give user@host or host (no spaces, no leading '-')")
        for o in self.options:
            if "=" not in o or o.startswith("-"):
                raise EdgeshipError(f"--ssh-option {o!r} is not KEY=VALUE",
                                    "e.g. --ssh-option UserKnownHostsFile=~/.ssh/ci_hosts")

    def _common(self) -> list[str]:
        args = []
        if self.config:
            args += ["-F", self.config]
        for o in self.options:  # ssh keeps the first value given for an option: user options win
            args += ["-o", o]
        args += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                 "-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
        if self.identity:
            args += ["-i", self.identity]
        return args

    def ssh_cmd(self, remote_command: str) -> list[str]:
        """``remote_command`` is a shell string; callers build it from shlex-quoted parts."""
        port = ["-p", str(int(self.port))] if self.port else []
        return [self.ssh, *self._common(), *port, "--", self.dest, remote_command]

    def scp_cmd(self, local: list[str], remote_dir: str) -> list[str]:
        port = ["-P", str(int(self.port))] if self.port else []
        return [self.scp, "-q", "-r", *self._common(), *port, "--", *local, f"{self.dest}:{remote_dir}/"]

    @property
    def where(self) -> str:
        return f"{self.dest}" + (f" port {self.port}" if self.port else "")

    @property
    def provision_cmd(self) -> str:
        """The command that sets this device up (the other ssh options as given to profile)."""
        extra = " ..." if self.identity or self.config or self.options else ""
        return f"edgeship provision --ssh {self.dest}" + (f" --ssh-port {self.port}" if self.port else "") + extra


def quote_cmd(parts: list[str]) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def ssh_run(cmd: list[str], target: SshTarget, timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run ssh or scp; ssh's own failures (connection, authentication, host key) are one line."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise EdgeshipError(f"{cmd[0]} not found on this machine",
                            "install the OpenSSH client (Debian: openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise EdgeshipError(f"{what} on {target.where} did not finish within {timeout:.0f} s",
                            "check the device is up and not overloaded, or raise --ssh-timeout") from None
    if p.returncode == 255 and "IDENTIFICATION HAS CHANGED" in p.stderr:
        raise EdgeshipError(*_changed_key(p.stderr, target))
    if p.returncode == 255:  # ssh's own failure: connection, authentication, host key
        lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
        reason = lines[-1] if lines else "ssh failed"
        raise EdgeshipError(f"cannot reach {target.where} over ssh: {reason}", _ssh_fix(reason, target))
    return p


def _changed_key(stderr: str, t: SshTarget) -> tuple[str, str]:
    """A host key that differs from the one known_hosts holds: what ssh said, and no advice that accepts the new key
    (ssh-keyscan would take whatever answers, which is how a man-in-the-middle gets trusted)."""
    said = " ".join(ln.strip(" @") for ln in stderr.splitlines() if "IDENTIFICATION HAS CHANGED" in ln)
    fp = re.search(r"SHA256:[A-Za-z0-9+/=]+", stderr)
    old = re.search(r"Offending \S+ key in (\S+)", stderr)
    host = t.dest.split("@")[-1]
    name = f"[{host}]:{t.port}" if t.port and t.port != 22 else host
    problem = (f"the host key of {t.where} has CHANGED since it was recorded (ssh: {said or 'host key changed'}; "
               f"the device now presents {fp.group(0) if fp else 'another key'}"
               f"{', the old key is in ' + old.group(1) if old else ''}): someone may be intercepting the "
               "connection, or the device was reinstalled; nothing was sent to it")
    fix = (f"do not accept the new key unseen: compare {fp.group(0) if fp else 'its fingerprint'} with the one on the "
           "device's own console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); only if they match, remove the "
           f"old entry (ssh-keygen -R '{name}'" + (f" -f {old.group(1).rsplit(':', 1)[0]}" if old else "") + ") and "
           "add the verified key")
    return problem, fix


def _ssh_fix(reason: str, t: SshTarget) -> str:
    r = reason.lower()
    if "host key verification failed" in r or "no matching host key" in r:
        port = f"-p {t.port} " if t.port else ""
        return (f"add the device's host key to known_hosts (ssh-keyscan {port}{t.dest.split('@')[-1]} "
                ">> ~/.ssh/known_hosts, then verify it)")
    if "permission denied" in r:
        return "install your public key on the device (ssh-copy-id) or pass --ssh-identity KEY"
    return "check the host name, port (--ssh-port) and that sshd runs on the device"


def stage_bundle(arts, into: Path) -> Path:
    """bundle/bench_runner.py (and the files it loads beside itself) + bundle/artifacts/<target>/<artifact files>
    + bundle/verify/ (the run's test samples and each artifact's host outputs on them, where the run has them).
    Artifacts are not beside the runner: Python puts the runner's directory first on sys.path, so a target named
    like a module (``json``, with an ``__init__.py`` among its files) would be imported by the runner's first
    line."""
    bundle = into / "bundle"
    bundle.mkdir()
    for f in RUNNER_FILES:
        shutil.copy2(f, bundle / f.name)
    for a in arts:
        d = bundle / "artifacts" / a.name
        d.mkdir(parents=True)
        for f in a.files:  # checked again here: whatever built ``arts``, nothing is read or written outside
            src = inside(a.dir, f, f"{a.dir / 'model.json'}")
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, inside(d, f, "the bundle"))
        if a.samples is not None and a.reference is not None:
            (bundle / "verify").mkdir(exist_ok=True)
            if not (bundle / "verify" / "samples.npz").exists():
                shutil.copy2(a.samples, bundle / "verify" / "samples.npz")
            shutil.copy2(a.reference, bundle / "verify" / f"{a.name}.npz")
    return bundle


def device_python(target: SshTarget, runner: str, timeout: float) -> tuple[str, dict]:
    """(the device's Python, its facts): ``--remote-python``, else the provisioned venv's, else python3."""
    args = [runner, "--facts"]
    cmd = quote_cmd([target.python, *args] if target.python else ["sh", "-c", FIND_PYTHON, "sh", *args])
    p = ssh_run(target.ssh_cmd(cmd), target, timeout, "reading the device's facts")
    python = target.python or next((ln.split("=", 1)[1] for ln in p.stdout.splitlines()
                                    if ln.startswith("EDGESHIP_PYTHON=")), "python3")
    fix = f"run `{target.provision_cmd}` (a Python 3.8+ with numpy and the runtimes)"
    if not target.python and not SAFE_PYTHON.match(python):  # the device said it: it reaches messages, report.json
        raise EdgeshipError(f"{target.where} named its Python {said(python, 80)!r}, not a plain path", fix)
    if p.returncode == 127:
        raise EdgeshipError(f"{python} not found on {target.where}",
                            f"run `{target.provision_cmd}`, install Python 3 there, or point --remote-python at it")
    try:  # the device's answer is checked like a measurement: standard JSON, one object, its facts an object
        raw = parse_runner_output(p.stdout, "the device's facts", target.where)
    except TargetError as e:  # the whole device, not one target
        raise EdgeshipError(e.problem, e.fix) from None
    if p.returncode != 0 or not raw or not raw.get("ok"):
        last = said((p.stderr.strip().splitlines() or ["no output"])[-1], 200)
        raise EdgeshipError(f"{python} on {target.where} cannot run edgeship's runner: {last}", fix)
    facts = raw.get("facts") or {}
    if not isinstance(facts, dict):
        raise EdgeshipError(f"{target.where} reported its facts as a JSON {type(facts).__name__}, not an object", fix)
    return python, facts


def emulated_measurement(m: Measurement) -> Measurement:
    """An emulated device's measurement: the runtime's verification stays, no timing or memory does."""
    return m.model_copy(update={**{k: ([] if k == "samples_ms" else None) for k in TIMINGS}, "method": EMULATED_METHOD})


def remote_tempdir(target: SshTarget, timeout: float, prefix: str) -> str:
    """A fresh ``mktemp -d`` directory on the device (its path checked: it reaches shell commands later)."""
    p = ssh_run(target.ssh_cmd(f'mktemp -d "${{TMPDIR:-/tmp}}/{prefix}.XXXXXX"'), target, timeout, "mktemp")
    remote_dir = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0 or not SAFE_REMOTE_DIR.match(remote_dir):
        raise EdgeshipError(f"could not create a temporary directory on {target.where}: "
                            f"{(p.stderr.strip() or remote_dir or 'no output')[:200]}",
                            "check the device's /tmp or $TMPDIR")
    return remote_dir


def remove_remote(target: SshTarget, remote_dir: str, timeout: float) -> None:
    subprocess.run(target.ssh_cmd(quote_cmd(["rm", "-rf", "--", remote_dir])), capture_output=True,
                   timeout=timeout, stdin=subprocess.DEVNULL)


def profile_ssh(arts: list[RunArtifact], target: SshTarget, threads: int, runs: int, warmup: int, timeout: float = 600,
                on_result=None) -> tuple[dict[str, Measurement], dict[str, str], str]:
    """Measure ``arts`` on the device. Returns ({name: measurement}, {name: error}, source: device or emulated)."""
    remote_dir = remote_tempdir(target, timeout, "edgeship-bundle")
    results, errors, source = {}, {}, "device"
    try:
        with tempfile.TemporaryDirectory(prefix="edgeship-bundle-") as tmp:
            bundle = stage_bundle(arts, Path(tmp))
            p = ssh_run(target.scp_cmd([str(bundle)], remote_dir), target, timeout, "copying the bundle")
            if p.returncode != 0:
                raise EdgeshipError(f"copying the bundle to {target.where} failed: {p.stderr.strip()[:200]}",
                                    "check free space on the device")
        rb = f"{remote_dir}/bundle"
        python, facts = device_python(target, f"{rb}/bench_runner.py", timeout)
        source = "emulated" if facts.get("emulated") else "device"
        if source == "emulated":  # no timing claim: one run, for the runner's output shape and the verification
            runs, warmup = 1, 0
        for a in arts:
            verify = (f"{rb}/verify/samples.npz", f"{rb}/verify/{a.name}.npz") if a.reference else None
            cmd = quote_cmd(runner_args(python, f"{rb}/bench_runner.py", f"{rb}/artifacts/{a.name}", threads, runs,
                                        warmup, verify, profile=0 if source == "emulated" else DEFAULT_PROFILE_RUNS))
            p = ssh_run(target.ssh_cmd(cmd), target, timeout, f"benchmarking {a.name}")
            if p.returncode == 127:
                raise EdgeshipError(f"{python} not found on {target.where}",
                                    f"run `{target.provision_cmd}`, or point --remote-python at a Python 3")
            try:
                raw = parse_runner_output(p.stdout, a.name, target.where)
                if p.returncode != 0 or not raw or not raw.get("ok"):
                    raise runner_failure(a.name, raw, p.stderr, target.where, python, target.provision_cmd)
                m = to_measurement(raw, source, target.where, a.name, transport="ssh", remote=target.where,
                                   remote_dir=remote_dir, remote_python=python)
                results[a.name] = emulated_measurement(m) if source == "emulated" else m
            except TargetError as e:
                errors[a.name] = str(e)
                continue
            if on_result:
                on_result(a.name, results[a.name])
    finally:
        remove_remote(target, remote_dir, timeout)
    return results, errors, source


def bench_many_ssh(directory: Path, target: SshTarget, args: list[str], timeout: float = 7200) -> dict:
    """``bench_runner.py --many`` over every artifact directory under ``directory``, on the device (calibration)."""
    remote_dir = remote_tempdir(target, timeout, "edgeship-calibrate")
    try:
        files = [*map(str, RUNNER_FILES), str(directory)]
        p = ssh_run(target.scp_cmd(files, remote_dir), target, timeout, "copying the probes")
        if p.returncode != 0:
            raise EdgeshipError(f"copying the calibration probes to {target.where} failed: "
                                f"{p.stderr.strip()[:200]}", "check free space on the device")
        python, facts = device_python(target, f"{remote_dir}/bench_runner.py", timeout)
        if facts.get("emulated"):
            raise EdgeshipError(f"{target.where} is an emulated device: its timings say nothing about the device, "
                                "so no latency predictor can be calibrated on it", "calibrate on the real device")
        cmd = quote_cmd([python, f"{remote_dir}/bench_runner.py", "--many", f"{remote_dir}/{directory.name}", *args])
        p = ssh_run(target.ssh_cmd(cmd), target, timeout, "timing the calibration probes")
    finally:
        remove_remote(target, remote_dir, timeout)
    raw = parse_runner_output(p.stdout)
    if p.returncode != 0 or not raw or not raw.get("ok"):
        err = runner_failure("calibration probes", raw, p.stderr, target.where, python)
        raise EdgeshipError(err.problem, err.fix)
    return raw


def ssh_facts(target: SshTarget, timeout: float = 120) -> dict:
    """What the device says about itself (``bench_runner.py --facts``), for the predictor file."""
    remote_dir = remote_tempdir(target, timeout, "edgeship-facts")
    try:
        p = ssh_run(target.scp_cmd([str(RUNNER)], remote_dir), target, timeout, "copying the runner")
        if p.returncode != 0:
            raise EdgeshipError(f"copying the runner to {target.where} failed: {p.stderr.strip()[:200]}",
                                "check free space on the device")
        return device_python(target, f"{remote_dir}/bench_runner.py", timeout)[1]
    finally:
        remove_remote(target, remote_dir, timeout)


# ----------------------------------------------------------------------------------- adb
