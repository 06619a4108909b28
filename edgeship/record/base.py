"""The run record's building blocks: the strict base models every section derives from and the names of
where a number came from (sources) and what a budget's verdict can be."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from edgeship.schema import Strict

SCHEMA_VERSION = 1
REPORT = "report.json"
# test-split samples (samples.npz) and each target's outputs on them on the host (<target>.npz), which a device's
# runtime is checked against when the run is profiled there (``DeviceVerification``)
VERIFY_DIR = "verify"
# the FP32 artifacts each INT8/FP16 target is timed beside at export (``<model>/<format>-<one of FP32_REFS>``, a link
# where a run's own FP32 target or the other reference serves): an export's scratch, gone before the run is renamed
# into place
FP32_REFS_DIR = "fp32-references"
FP32_REFS = ("input_model", "compressed_model")
MAX_RECORD_BYTES = 256 << 20  # a record with every measurement's samples is a few MB
# emulated: an emulated device (qemu-user) ran it; its runtime's outputs count, its timings do not
Source = Literal["host", "device", "emulated", "predicted", "estimate"]
NonNegative = Annotated[float, Field(ge=0)]
SOURCES: tuple[str, ...] = ("host", "device", "emulated", "predicted", "estimate")
# what `check` judges latency and RAM on: one source, or "auto" (each target on its own device's numbers)
CheckSource = Literal["auto", "host", "device", "emulated", "predicted", "estimate"]
CHECK_SOURCES: tuple[str, ...] = ("auto", *SOURCES)
BudgetStatus = Literal["pass", "fail", "unverified"]
# the latency a target's summary shows
SOURCE_PREFERENCE: tuple[str, ...] = ("device", "predicted", "host", "estimate")



class Record(Strict):
    """Strict, and NaN/inf refused on the way in (a crafted or broken measurement must not get stored)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class Open(Record):
    """A section whose keys a backend or a measuring tool adds to (kept as they are)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), allow_inf_nan=False)

