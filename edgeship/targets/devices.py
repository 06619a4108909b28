"""The device catalog: one YAML file per device in ``edgeship/targets/devices/`` (CPU architecture,
cores, ISA features, RAM, suitable formats and runtimes, the thread count to benchmark with,
default budgets, latency-estimate factors), plus ``host``, whose CPU, RAM and runtimes are detected
on this machine at run time."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import Field, ValidationError

from edgeship.errors import EdgeshipError
from edgeship.recipe import BudgetSpec, Strict, format_validation_error

CATALOG_DIR = Path(__file__).with_name("devices")
HOST = "host"
# format -> (python module that runs it, pip package a device needs); the first importable wins
RUNTIME_MODULES = {
    "onnx": [("onnxruntime", "onnxruntime")],
    "openvino": [("openvino", "openvino")],
    "tflite": [("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")],
}


class CpuSpec(Strict):
    arch: str
    model: str
    cores: int = Field(ge=1)
    freq_ghz: Optional[float] = None
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
    formats: list[Literal["onnx", "openvino", "tflite"]]
    runtimes: dict[str, str]
    threads: int = Field(ge=1, description="thread count to benchmark with")
    budgets: BudgetSpec = Field(default_factory=BudgetSpec)
    estimate: EstimateSpec
    detected: bool = False

    def factor(self, precision: str) -> float:
        return self.estimate.factor[precision_class(precision)]

    def runtime_package(self, fmt: str) -> str:
        return self.runtimes.get(fmt) or RUNTIME_MODULES[fmt][0][1]


def precision_class(precision: str) -> str:
    """fp32 / fp16 / int8 (every integer flavour: int8, dynamic_int8, int8_float_io)."""
    return "int8" if "int8" in precision else precision if precision in ("fp32", "fp16") else "fp32"


def _load_file(path: Path) -> DeviceProfile:
    try:
        raw = yaml.safe_load(path.read_text())
        return DeviceProfile.model_validate(raw)
    except ValidationError as e:
        raise EdgeshipError(format_validation_error(e, str(path), DeviceProfile),
                            "fix the device profile (see the other files in edgeship/targets/devices/)") from None


@functools.lru_cache(maxsize=None)
def _catalog_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CATALOG_DIR.glob("*.yaml"))}


def names() -> list[str]:
    return list(_catalog_files())


def host_runtimes() -> dict[str, str]:
    """Formats this Python can run -> the package that runs them."""
    found = {}
    for fmt, options in RUNTIME_MODULES.items():
        for module, package in options:
            if importlib.util.find_spec(module) is not None:
                found[fmt] = package
                break
    return found


@functools.lru_cache(maxsize=1)
def detect_host() -> DeviceProfile:
    from edgeship.targets.bench_runner import device_facts

    base = _load_file(_catalog_files()[HOST])
    facts = device_facts()
    runtimes = host_runtimes()
    mhz = facts.get("max_freq_mhz")
    cpu = CpuSpec(arch=platform.machine(), model=facts["cpu"], cores=os.cpu_count() or 1,
                  freq_ghz=round(mhz / 1000, 2) if mhz else None, features=facts["features"])
    return base.model_copy(update={"cpu": cpu, "ram_mb": facts["ram_mb"] or 0, "runtimes": runtimes,
                                   "formats": [f for f in base.formats if f in runtimes], "detected": True})


def get(name: str) -> DeviceProfile:
    files = _catalog_files()
    if name not in files:
        raise EdgeshipError(f"unknown device {name!r}", f"use one of: {', '.join(files)} (edgeship devices)")
    return detect_host() if name == HOST else _load_file(files[name])


def catalog() -> list[DeviceProfile]:
    return [get(n) for n in names()]
