"""The device catalog: one YAML file per device in ``edgeship/devices/profiles/`` (CPU architecture,
cores, ISA features, RAM, the formats that suit it, the thread count to benchmark with, default
budgets, latency-estimate factors), plus ``host``, whose CPU, RAM and runtimes are detected on this
machine at run time. Which runtime package runs a format is the format's backend's fact
(``Backend.runtime_modules``), not the catalog's."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from edgeship.devices.bench_runner import device_facts
from edgeship.errors import EdgeshipError
from edgeship.recipe import BudgetSpec
from edgeship.schema import Strict, format_validation_error
from edgeship.targets.base import formats as backend_formats

CATALOG_DIR = Path(__file__).with_name("profiles")
HOST = "host"


class CpuSpec(Strict):
    arch: str
    model: str
    cores: int = Field(ge=1)
    freq_ghz: float | None = None
    features: list[str] = Field(default_factory=list)


class EstimateSpec(Strict):
    factor: dict[Literal["fp32", "fp16", "int8"], float] = Field(
        description="device latency at its thread count / host latency at 1 thread, per precision class")
    basis: str = ""


class DeviceProfile(Strict):
    name: str
    title: str
    connect: Literal["ssh", "adb", "local"]
    cpu: CpuSpec
    ram_mb: int = Field(ge=0)
    formats: list[str] = Field(default_factory=list, description="formats that suit the device (and that it has a "
                               "runtime for); the host's are detected from the backends' runtime modules")
    threads: int = Field(ge=1, description="thread count to benchmark with")
    budgets: BudgetSpec = Field(default_factory=BudgetSpec)
    estimate: EstimateSpec
    detected: bool = False

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, v: list[str]) -> list[str]:
        known = backend_formats()
        unknown = [f for f in v if f not in known]
        if unknown:
            raise ValueError(f"unknown format {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return v

    def factor(self, precision: str) -> float:
        return self.estimate.factor[precision_class(precision)]

    @property
    def runtimes(self) -> dict[str, str]:
        """format -> the pip package that runs it on this device (the backend's first choice)."""
        if self.detected:
            return host_runtimes()
        return {f: backend_formats()[f].runtime_modules[0][1] for f in self.formats}


# The channel multiple a device's INT8 matrix unit computes in whole tiles, by ISA feature, first match wins, with
# the measurement behind it; `prune`'s round_to: auto takes it. AMX: an INT8 tile row holds 64 input channels;
# pruned ResNet-18-224 at half the MACs ran 1.47x (OpenVINO), 1.19x (LiteRT) and 1.11x (ONNX Runtime) faster
# with widths on multiples of 64 than of 8 (benchmarks/results/round_to.json, Intel Xeon with AMX). No other
# feature has a measured gain over 8: on AVX-512 VNNI without AMX no multiple of 16, 32 or 64 was faster than 8 on
# both pruned models (round_to_epyc.json, AMD EPYC: ResNet-18 0.92-1.15x, MobileNetV2 0.92-1.23x), and Arm's dot
# product (only emulated here) keeps 8 until a device shows otherwise.
CHANNEL_TILES: list[tuple[str, int]] = [("amx_int8", 64)]
DEFAULT_CHANNEL_TILE = 8


def channel_tile(device: DeviceProfile) -> tuple[int, str]:
    """(channels, why): the multiple that keeps ``device``'s INT8 matrix unit in whole tiles (``CHANNEL_TILES``)."""
    for feature, tile in CHANNEL_TILES:
        if feature in device.cpu.features:
            return tile, feature
    return DEFAULT_CHANNEL_TILE, "no matrix unit with a measured tile"


def precision_class(precision: str) -> str:
    """fp32 / fp16 / int8 (every integer flavour: int8, dynamic_int8, int8_float_io)."""
    return "int8" if "int8" in precision else precision if precision in ("fp32", "fp16") else "fp32"


def _load_file(path: Path) -> DeviceProfile:
    try:
        raw = yaml.safe_load(path.read_text())
        return DeviceProfile.model_validate(raw)
    except ValidationError as e:
        raise EdgeshipError(format_validation_error(e, str(path), DeviceProfile),
                            "fix the device profile (see the other files in edgeship/devices/profiles/)") from None


@functools.cache
def _catalog_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CATALOG_DIR.glob("*.yaml"))}


def names() -> list[str]:
    return list(_catalog_files())


def host_runtimes() -> dict[str, str]:
    """Formats this Python can run -> the package that runs them (the first of the backend's choices
    whose top-level module is installed; its submodules are not imported)."""
    found = {}
    for fmt, backend in backend_formats().items():
        for module, package in backend.runtime_modules:
            if importlib.util.find_spec(module.split(".")[0]) is not None:
                found[fmt] = package
                break
    return found


@functools.lru_cache(maxsize=1)
def detect_host() -> DeviceProfile:
    base = _load_file(_catalog_files()[HOST])
    facts = device_facts()
    runtimes = host_runtimes()
    mhz = facts.get("max_freq_mhz")
    cpu = CpuSpec(arch=platform.machine(), model=facts["cpu"], cores=os.cpu_count() or 1,
                  freq_ghz=round(mhz / 1000, 2) if mhz else None, features=facts["features"])
    return base.model_copy(update={"cpu": cpu, "ram_mb": facts["ram_mb"] or 0,
                                   "formats": [f for f in backend_formats() if f in runtimes], "detected": True})


def get(name: str) -> DeviceProfile:
    files = _catalog_files()
    if name not in files:
        raise EdgeshipError(f"unknown device {name!r}", f"use one of: {', '.join(files)} (edgeship devices)")
    return detect_host() if name == HOST else _load_file(files[name])


def catalog() -> list[DeviceProfile]:
    return [get(n) for n in names()]
