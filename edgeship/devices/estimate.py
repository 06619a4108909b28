"""Device latency ESTIMATED from the host measurement when no device is reachable.

Method (written here and in the README; every estimate carries it in its ``method`` field):

    estimate_ms = host_ms(1 thread) x factor[device][precision class]

- ``host_ms`` is this machine's measurement of the same artifact with ONE thread (the host
  profile's thread count; an estimate refuses a host measurement taken with more threads).
- ``factor`` comes from the device's YAML profile (``estimate.factor``), one number per precision
  class (fp32, fp16, int8: every integer flavour counts as int8). It is the ratio of the device's
  latency at its benchmark thread count to the latency on one core of the reference host class, a
  ~3 GHz x86-64 core with AVX2 (and VNNI for int8). Each profile's ``estimate.basis`` says where its
  factor comes from: published per-core speed of the CPU relative to that reference, the typical
  multi-thread gain on small convolutional nets, and whether the CPU has the int8 dot-product
  instructions the host uses. They are planning numbers: real ratios depend on the model's
  operators, the runtime version, cache sizes and thermal state, and on how far this host is from
  the reference class (this host's own speed is NOT measured; a slower host inflates estimates).
- Every latency statistic (p50/p90/p99/mean/std/min/max, load time) is scaled by the factor; the raw
  samples are NOT copied (an estimate has no samples). Peak RAM and file size are carried over from
  the host measurement, which is itself an upper-bound-ish proxy for the device's runtime.

Estimates are stored only under ``source: estimate`` and never mixed with measurements; a budget
verdict built on them says so in the table, the JUnit file and the Markdown summary.
"""

from __future__ import annotations

from edgeship.devices.catalog import DeviceProfile, precision_class
from edgeship.errors import EdgeshipError
from edgeship.record import Measurement

SCALED = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "load_ms", "first_run_ms")


def estimate(host: Measurement, device: DeviceProfile, precision: str, target: str) -> Measurement:
    """An estimate for ``device`` from a host measurement of ``target``."""
    if host.source != "host":
        raise EdgeshipError(f"{target}: estimates start from a host measurement, got {host.source!r}",
                            "run `edgeship profile RUN` first")
    if host.threads != 1:
        raise EdgeshipError(f"{target}: the host measurement used {host.threads} threads; estimates "
                            "need the 1-thread reference", "run `edgeship profile RUN --threads 1` first")
    factor = device.factor(precision)
    pclass = precision_class(precision)
    method = (f"ESTIMATE, not a measurement: host 1-thread latency x {factor:g} ({device.name} factor for "
              f"{pclass}, {device.threads} threads on the device; basis: {device.estimate.basis}). "
              "Peak RAM and size carried over from the host measurement.")
    scaled = {k: (None if getattr(host, k) is None else round(getattr(host, k) * factor, 4)) for k in SCALED}
    return Measurement(source="estimate", **scaled, samples_ms=[], peak_rss_mb=host.peak_rss_mb,
                       arena_mb=host.arena_mb, size_bytes=host.size_bytes, threads=device.threads, runs=host.runs,
                       runtime=host.runtime, runtime_version=host.runtime_version, device=device.name, factor=factor,
                       precision_class=pclass, method=method,
                       facts={"estimated_for": device.name, "device_title": device.title,
                              "host_cpu": host.facts.get("cpu"), "host_uname": host.facts.get("uname")})
