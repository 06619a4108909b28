"""`edgeship profile RUN`: measure a run's artifacts on the host, on a device (ssh / adb), or
estimate device latency from the host measurement; store them in report.json (atomically)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edgeship.errors import EdgeshipError
from edgeship.progress import info
from edgeship.targets import devices, rundir
from edgeship.targets.measure import DEFAULT_RUNS, DEFAULT_WARMUP, measure_all_host


@dataclass
class ProfileResult:
    run_dir: Path
    source: str
    measured: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _device_for(art, override: Optional[str]) -> devices.DeviceProfile:
    return devices.get(override or art.device or devices.HOST)


def _by_threads(arts, device: Optional[str], threads: Optional[int]) -> dict[int, list]:
    """Group artifacts by the thread count their device profile benchmarks with."""
    groups: dict[int, list] = {}
    for a in arts:
        groups.setdefault(threads or _device_for(a, device).threads, []).append(a)
    return groups


def profile(run: Path | str, targets: Optional[list[str]] = None, ssh=None, adb=None, estimate: bool = False,
            device: Optional[str] = None, runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP,
            threads: Optional[int] = None, timeout: float = 600) -> ProfileResult:
    from edgeship.targets import remote
    from edgeship.targets.estimate import estimate as estimate_one

    if sum(x is not None and x is not False for x in (ssh, adb, estimate or None)) > 1:
        raise EdgeshipError("give only one of --ssh, --adb, --estimate", "profile one place at a time")
    if runs < 1 or (threads is not None and threads < 1) or warmup < 0:
        raise EdgeshipError("--runs and --threads must be at least 1, --warmup at least 0", "e.g. --runs 50")
    if device:
        devices.get(device)  # unknown names are bad input before any work
    run_dir = rundir.resolve(run)
    report = rundir.load_report(run_dir)
    arts = rundir.artifacts(run_dir, report, targets)
    res = ProfileResult(run_dir, "device" if (ssh or adb) else "estimate" if estimate else "host")

    def shown(name, m):
        info(f"{res.source} {name}: p50 {m['p50_ms']:.3f} ms, p90 {m['p90_ms']:.3f} ms, "
             f"peak RAM {m['peak_rss_mb'] or 0:.0f} MB, {m['threads']} thread(s)")

    if ssh is not None or adb is not None:
        for t, group in _by_threads(arts, device, threads).items():
            if ssh is not None:
                ok, bad = remote.profile_ssh(group, ssh, t, runs, warmup, timeout, on_result=shown)
            else:
                ok, bad = remote.profile_adb(group, adb, t, runs, warmup, timeout, on_result=shown)
            for name, m in ok.items():
                m["device"] = _device_for(next(a for a in group if a.name == name), device).name
            res.measured.update(ok)
            res.errors.update(bad)
    elif estimate:
        for a in arts:
            dev = _device_for(a, device)
            if dev.name == devices.HOST:
                info(f"{a.name}: its device is the host, nothing to estimate (skipped)")
                continue
            host = ((report.get("measurements") or {}).get(a.name) or {}).get("host")
            if host is None or host.get("threads") != 1:
                measure_all_host(run_dir, report, [a.name], threads=1, runs=runs, warmup=warmup, quiet=True)
                host = ((report.get("measurements") or {}).get(a.name) or {}).get("host")
                if host is None:
                    res.errors[a.name] = f"{a.name}: no host measurement to estimate from"
                    continue
            res.measured[a.name] = estimate_one(host, dev, a.precision, a.name)
            shown(a.name, res.measured[a.name])
        if not res.measured and not res.errors:
            raise EdgeshipError("nothing to estimate: every target's device is the host",
                                "pass --device NAME (see `edgeship devices`) or set `device:` on the targets")
    else:
        # the host profile's thread count (1) for every artifact: host numbers stay comparable
        res.errors.update(measure_all_host(run_dir, report, [a.name for a in arts], threads=threads, runs=runs,
                                           warmup=warmup))
        res.measured.update({a.name: report["measurements"][a.name]["host"] for a in arts if a.name not in res.errors})
    for name, m in res.measured.items():
        rundir.store(report, name, m)
    if res.errors:
        report.setdefault("measurement_errors", {}).update(
            {k: {**(report.get("measurement_errors", {}).get(k) or {}), res.source: v} for k, v in res.errors.items()})
    rundir.write_report(run_dir, report)
    return res
