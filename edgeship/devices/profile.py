"""`edgeship profile RUN`: measure a run's artifacts on the host or on a device (ssh / adb), predict a device's
latency with its calibrated predictor (``--predict``; ``--calibrate`` first builds that predictor on the device),
or estimate it from the host measurement with a fixed factor; store the results in report.json (atomically).
A device that says it is emulated gives `emulated` measurements (verification on its runtime, no timings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeship.devices import android, catalog, remote
from edgeship.devices import predictor as predictors
from edgeship.devices.calibrate import Plan, calibrate
from edgeship.devices.estimate import estimate as estimate_one
from edgeship.devices.measure import (
    DEFAULT_RUNS,
    DEFAULT_WARMUP,
    RunArtifact,
    layer_lines,
    measure_all_host,
    run_artifacts,
)
from edgeship.errors import EdgeshipError
from edgeship.progress import info
from edgeship.record import Measurement, RunRecord

MAX_REMOTE_THREADS = 256


@dataclass
class ProfileResult:
    record: RunRecord
    source: str
    measured: dict[str, Measurement] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.record.run_dir


def _device_for(art: RunArtifact, override: str | None) -> catalog.DeviceProfile:
    return catalog.get(override or art.device or catalog.HOST)


def _check_threads(threads: int, arts: list[RunArtifact], device: str | None, remote: bool) -> None:
    """At most the cores of the machine that runs the benchmark: this one (its profile holds the detected count),
    or over ssh/adb the catalog device's; a remote device the catalog does not describe is capped at
    MAX_REMOTE_THREADS. More threads than cores only slow a benchmark down, and a typo such as 100000 would start
    that many threads."""
    for a in arts:
        dev = _device_for(a, device) if remote else catalog.get(catalog.HOST)
        if remote and dev.name == catalog.HOST:
            cap, what = MAX_REMOTE_THREADS, "edgeship's cap for a device the catalog does not describe"
        else:
            cap, what = dev.cpu.cores, f"the {'host' if dev.name == catalog.HOST else dev.name}'s {dev.cpu.cores} cores"
        if threads > cap:
            raise EdgeshipError(f"--threads {threads} is more than {what} (target {a.name})",
                                f"give --threads between 1 and {cap}")


def _by_threads(arts: list[RunArtifact], device: str | None, threads: int | None) -> dict[int, list[RunArtifact]]:
    """Group artifacts by the thread count their device profile benchmarks with."""
    groups: dict[int, list[RunArtifact]] = {}
    for a in arts:
        groups.setdefault(threads or _device_for(a, device).threads, []).append(a)
    return groups


def profile(run: Path | str | RunRecord, targets: list[str] | None = None,
            ssh: remote.SshTarget | None = None, adb: android.AdbTarget | None = None, estimate: bool = False,
            device: str | None = None, runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP,
            threads: int | None = None, timeout: float = 600, predict: bool = False, calibrate: bool = False,
            probes: int = 400, calibration_archs: int = 20, predictors_dir: Path | None = None) -> ProfileResult:
    """Measure, predict or estimate a run's artifacts at one place and store the results in its record.
    ``calibrate``: first build the device's latency predictor there (host, ``ssh`` or ``adb``), then predict."""
    places = (ssh, adb, estimate or None, (predict and not calibrate) or None)
    if sum(x is not None and x is not False for x in places) > 1:
        raise EdgeshipError("give only one of --ssh, --adb, --estimate, --predict (--calibrate goes with --ssh or "
                            "--adb, or alone for this machine)", "profile one place at a time")
    if estimate and calibrate:
        raise EdgeshipError("--calibrate builds a predictor; --estimate applies a fixed factor", "give one of them")
    if runs < 1 or (threads is not None and threads < 1) or warmup < 0:
        raise EdgeshipError("--runs and --threads must be at least 1, --warmup at least 0", "e.g. --runs 50")
    if device:
        catalog.get(device)  # unknown names are bad input before any work
    record = run if isinstance(run, RunRecord) else RunRecord.load(run)
    arts = run_artifacts(record, targets)
    if threads is not None:
        _check_threads(threads, arts, device, remote=ssh is not None or adb is not None)
    predicting = predict or calibrate
    res = ProfileResult(record, "predicted" if predicting else "device" if (ssh or adb) else
                        "estimate" if estimate else "host")
    if calibrate:
        _calibrated(res, arts, ssh, adb, device, threads, probes, calibration_archs, predictors_dir)
    if predicting:
        _predicted(res, arts, device, threads, predictors_dir)
    elif ssh is not None or adb is not None:
        _on_device(res, arts, ssh, adb, device, threads, runs, warmup, timeout)
    elif estimate:
        _estimated(res, arts, device, runs, warmup)
    else:
        # the host profile's thread count (1) for every artifact: host numbers stay comparable
        res.errors.update(measure_all_host(record, [a.name for a in arts], threads=threads, runs=runs, warmup=warmup))
        res.measured.update({a.name: record.measurements[a.name]["host"] for a in arts if a.name not in res.errors})
    for name, m in res.measured.items():
        record.store(name, m)
    for name, e in res.errors.items():
        record.store_error(name, res.source, e)
    record.save()
    return res


def _shown(name: str, m: Measurement) -> None:
    v = m.verification
    checked = (f"; on {m.facts.get('machine') or 'the device'}: top-1 {v.top1 or 0:.4f}, agreement with the host "
               f"{v.agreement or 0:.4f} ({v.n} test samples)") if v else ""
    if m.source == "emulated":
        info(f"emulated {name}: {m.runtime} {m.runtime_version}{checked} (no latency: emulated)")
        return
    ram = f"peak RAM {m.peak_rss_mb:.0f} MB" if m.peak_rss_mb is not None else "no peak RAM (not measured)"
    info(f"{m.source} {name}: p50 {m.p50_ms or 0:.3f} ms, p90 {m.p90_ms or 0:.3f} ms, {ram}, {m.threads} thread(s)"
         f"{checked}")
    for line in layer_lines(name, m):
        info(line)


def _on_device(res: ProfileResult, arts: list[RunArtifact], ssh: remote.SshTarget | None,
               adb: android.AdbTarget | None, device: str | None, threads: int | None, runs: int, warmup: int,
               timeout: float) -> None:
    """Over ssh or adb, one group per thread count; each measurement names the catalog device it stands for."""
    for t, group in _by_threads(arts, device, threads).items():
        if ssh is not None:
            ok, bad, res.source = remote.profile_ssh(group, ssh, t, runs, warmup, timeout, on_result=_shown)
        else:
            assert adb is not None
            ok, bad = android.profile_adb(group, adb, t, runs, warmup, timeout, on_result=_shown)
        for name, m in ok.items():
            m.device = _device_for(next(a for a in group if a.name == name), device).name
            emulated = m.facts.get("emulated") or {}
            if m.source == "emulated" and emulated.get("device") in catalog.names():
                m.device = emulated["device"]  # the device it emulates, whatever the target names
        res.measured.update(ok)
        res.errors.update(bad)


def _calibrated(res: ProfileResult, arts: list[RunArtifact], ssh: remote.SshTarget | None,
                adb: android.AdbTarget | None, device: str | None, threads: int | None, probes: int, archs: int,
                directory: Path | None) -> None:
    """Build the predictor of the one device the artifacts are for, at its thread count, on that device."""
    names = {_device_for(a, device).name for a in arts}
    if len(names) > 1:
        raise EdgeshipError("--calibrate builds one device's predictor; these targets are for "
                            f"{', '.join(sorted(names))}",
                            "pass --device NAME (or -t for that device's targets)")
    dev = catalog.get(names.pop())
    if dev.name != catalog.HOST and ssh is None and adb is None:
        raise EdgeshipError(f"--calibrate for {dev.name} measures on {dev.name}: say how to reach it",
                            "add --ssh USER@HOST (or --adb SERIAL); alone, --calibrate builds this machine's (host)")
    configs = sorted({(a.format, a.precision) for a in arts})
    plan = Plan(dev.name, configs, [threads or dev.threads], probes=probes, fit=archs, validate=archs, ssh=ssh,
                adb=adb, directory=directory)
    _pf, path = calibrate(plan)
    info(f"latency predictor of {dev.name} written to {path} (commit it: `check` and `export` use it)")


def _predicted(res: ProfileResult, arts: list[RunArtifact], device: str | None, threads: int | None,
               directory: Path | None) -> None:
    """Each artifact's latency on its device from that device's predictor file, with the predictor's error."""
    for a in arts:
        dev = _device_for(a, device)
        try:
            pf = predictors.load(dev.name, directory)
            if pf is None:
                raise EdgeshipError(f"{a.name}: {dev.name} has no latency predictor "
                                    f"({predictors.path_for(dev.name, directory)})",
                                    "calibrate it on the device: `edgeship profile RUN --calibrate --device "
                                    f"{dev.name} --ssh USER@HOST`")
            m = predictors.predict(pf, a.dir / a.main, a.format, a.precision, threads or dev.threads)
        except EdgeshipError as e:
            res.errors[a.name] = str(e)
            continue
        res.measured[a.name] = m
        _shown(a.name, m)


def _estimated(res: ProfileResult, arts: list[RunArtifact], device: str | None, runs: int, warmup: int) -> None:
    """Each artifact whose device is not the host, from its 1-thread host measurement (taken when missing)."""
    record = res.record
    for a in arts:
        dev = _device_for(a, device)
        if dev.name == catalog.HOST:
            info(f"{a.name}: its device is the host, nothing to estimate (skipped)")
            continue
        host = record.measurements_of(a.name).get("host")
        if host is None or host.threads != 1:
            measure_all_host(record, [a.name], threads=1, runs=runs, warmup=warmup, quiet=True)
            host = record.measurements_of(a.name).get("host")
            if host is None:
                res.errors[a.name] = f"{a.name}: no host measurement to estimate from"
                continue
        res.measured[a.name] = estimate_one(host, dev, a.precision, a.name)
        _shown(a.name, res.measured[a.name])
    if not res.measured and not res.errors:
        raise EdgeshipError("nothing to estimate: every target's device is the host",
                            "pass --device NAME (see `edgeship devices`) or set `device:` on the targets")
