"""A device's latency predictor: kernel-level, calibrated on the device, with its error measured and carried.

In the manner of nn-Meter (Zhang et al., MobiSys 2021): an artifact's graph, as its runtime fuses it, is a list of
kernels (``edgeship.devices.kernels``); each kernel's latency on the device comes from a forest per kernel
type (extremely randomized trees on the probes, a random forest on in-context times), fitted on measurements of
one-kernel probe models with sampled configurations (channels, resolution, kernel size, stride) for one runtime,
precision and thread count. A probe's time holds its own session overhead and its input/output conversion, which a
whole model pays once, so the kernel sum is mapped to a model's latency by a linear
correction fitted on whole random architectures measured on the same device:

    latency_ms = a + b * sum(kernel_ms) + c * len(kernels) + d * input elements + f * MB of weights
                 + e * MB beyond L2 + g * elements of a multi-channel image input   (b, e, f, g >= 0)

(one ``b`` per kernel group; ``d``, per million elements the kernels read, takes back what each probe paid for
its own input, such as an INT8 probe quantizing it, that a kernel inside a model does not pay; ``e`` charges the
model's weights beyond one core's L2 cache, which a probe, its weights cached between runs, never reads from
memory: fitted where calibration knows the cache size and enough fitting architectures exceed it; ``g`` the
conversion of an image input of 2+ channels to the runtime's own layout, which no kernel holds: OpenVINO INT8's
Reorder before the first convolution; the predictor_zen4_p39 run's evaluation architectures with 3-channel inputs
at 96-224 px were predicted 6-25 % low without it).

The predictor's error is then measured on other random architectures, held out of that fit (the stored correction
is fitted again on both sets once the error is measured, ``correction_archs``): the mean absolute
percentage error, the fraction within +-10 %, and the upper bound ``upper_pct`` (the 95th percentile of
measured / predicted - 1, and never less than how far one timing of an architecture lands above that
architecture's median, 95th percentile: the device's own noise): a prediction's upper bound is
``predicted x (1 + upper_pct / 100)``, and a budget judged on a prediction passes only if that bound does. All
of it is stored in ``predictors/<device>.json``, a plain JSON file (trees as arrays, no pickle) the user can
commit; predicting needs numpy and the format's reader, not scikit-learn.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from edgeship.devices.kernels import FEATURES, FLOAT_SOFTMAX_MAP, KERNEL_TYPES, ONE_D, Kernel, ops_text, read
from edgeship.devices.terms import beyond_cache_mb, image_elements, input_elements, weight_mb
from edgeship.errors import EdgeshipError
from edgeship.record import Measurement, Prediction
from edgeship.schema import Strict, format_validation_error
from edgeship.version import __version__

PREDICTORS_DIR = Path("predictors")
FILE_VERSION = 1


class Forest(Strict):
    """One kernel type's latency model: a linear baseline in the work the kernel implies (``ms = intercept +
    per_mmac x MMACs + per_melem x million elements read and written``, non-negative coefficients), times a random
    forest's correction over ``FEATURES`` (fitted on log(measured / baseline): the efficiency a configuration
    reaches, which trees capture from few samples where they could not extrapolate raw latencies). Each tree is
    stored as parallel arrays."""

    intercept: float = 0.0
    per_mmac: float = 0.0
    per_melem: float = 0.0
    left: list[list[int]]
    right: list[list[int]]
    feature: list[list[int]]
    threshold: list[list[float]]
    value: list[list[float]]
    n_samples: int

    def baseline(self, ks: list[Kernel]) -> np.ndarray:
        return np.array([self.intercept + self.per_mmac * k.macs / 1e6 + self.per_melem * k.traffic / 1e6
                         for k in ks])

    def latency_ms(self, ks: list[Kernel]) -> np.ndarray:
        return self.baseline(ks) * np.exp(self.predict(np.array([k.features() for k in ks])))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Mean over trees of each row's leaf value (the log correction)."""
        x = np.asarray(x, dtype=np.float32)  # as scikit-learn compares them
        total = np.zeros(len(x))
        rows = np.arange(len(x))
        for left, right, feat, thr, val in zip(self.left, self.right, self.feature, self.threshold, self.value):
            lft, rgt, f, t, v = (np.asarray(a) for a in (left, right, feat, thr, val))
            node = np.zeros(len(x), dtype=np.int64)
            while True:
                inner = lft[node] >= 0
                if not inner.any():
                    break
                go_left = x[rows, np.maximum(f[node], 0)] <= t[node]
                node = np.where(inner, np.where(go_left, lft[node], rgt[node]), node)
            total += v[node]
        return total / len(self.left)


class ErrorStats(Strict):
    """A predictor's error on architectures it was not fitted on (percent)."""

    n: int  # comparisons: each validation architecture against each process that timed it
    n_archs: int | None = None  # the architectures (None: one comparison each, as files before anchors)
    mape_pct: float
    within_10pct: float  # fraction of architectures within +-10 %
    upper_pct: float  # 95th percentile of measured / predicted - 1, at least noise_pct: the bound a budget adds
    max_abs_pct: float
    noise_pct: float | None = None  # 95th percentile of one timing over its architecture's median (None: not known)


# a 1-D model's prediction carries the error measured on the validation architectures holding 1-D convolutions, a
# 2-D one that of the others (``ConfigPredictor.family_errors``); with fewer 1-D architectures than this behind it,
# a 1-D prediction backs no budget: p30's LiteRT file stated 96 % within +-10 % on 24 architectures (4 of them 1-D)
# and put 27-43 % of 30 unseen 1-D architectures there (predictor_1d_tflite_epyc.json)
MIN_FAMILY_ARCHS = 8


class FamilyError(Strict):
    """A predictor's p50 and p90 error on the validation architectures of one family (1-D or 2-D models)."""

    p50: ErrorStats
    p90: ErrorStats


def family(ks: list[Kernel]) -> str:
    """"1d" for a model holding 1-D convolutions, "2d" for any other."""
    return "1d" if any(k.type in ONE_D for k in ks) else "2d"


GROUPS = {"conv": ("conv",), "conv_signed": ("conv",), "dwconv": ("dwconv",), "other": ("add", "gpool", "pool", "fc"),
          "conv1d": ("conv1d", "dwconv1d"), **{f"eltwise{c}": ("eltwise",) for c in (1, 2, 3, 4)}}
# a group a calibration had no kernels of (or a file older than it) weighs its kernels as this group does
FALLBACK = {"conv_signed": "conv", "conv1d": "conv", **{f"eltwise{c}": "other" for c in (1, 2, 3, 4)}}


# an eltwise kernel's class (``kernels.ELTWISE``), as a prediction that leaves it out names it
ELTWISE_NAMES = {1: "element-wise arithmetic (PReLU, MUL, SUB)", 2: "sigmoid/tanh", 3: "transpose/pad/concat",
                 4: "softmax"}


def eltwise_tag(k: Kernel) -> str:
    """An eltwise kernel's class and shape as its configuration's ``covered_ops`` records the validation's (a
    PReLU over a map: with a slope per channel, as ``archs.trained_prelu`` has drawn them since p34)."""
    shape = "vector" if k.hin * k.win == 1 else "map-per-channel" if k.k == 1 else "map"
    return f"eltwise:{k.k}:{shape}"


def eltwise_validated(k: Kernel, covered: list[str]) -> bool:
    """Whether the validation architectures held an eltwise kernel of ``k``'s class (a softmax: over the same
    shape, a classifier's vector or a map: its time follows its rows; MTCNN P-Net's over a map's 2 channels per
    pixel, which LiteRT runs in float, put its prediction 58 % under: predictor_zoo_eltwise_zen5.json; a PReLU over
    a map: with per-channel slopes, which LiteRT broadcasts per position: a file whose validation held PReLUs of
    one slope, as before p34, backed P-Net at -25 %)."""
    tag = eltwise_tag(k)
    exact = k.k == 4 or tag.endswith("-per-channel")  # only the very shape the validation held
    return tag in covered or (not exact and any(c.startswith(f"eltwise:{k.k}:") for c in covered))


def group_of(k: Kernel) -> str:
    """The correction's group of a kernel: dense convolutions with a signed int8 input (``Kernel.sin``) apart, and
    each class of element-wise operators apart."""
    if k.type == "conv":
        return "conv_signed" if k.sin else "conv"
    if k.type == "eltwise":
        return f"eltwise{k.k}"
    return next(g for g, kinds in GROUPS.items() if k.type in kinds)


class Correction(Strict):
    """From kernel sums to a model's latency: ``a + sum(b[group] x kernel ms of the group) + c x kernels + d x
    million input elements + f x MB of weights + e x MB of weights beyond one core's L2 cache`` (``cache_kb``)
    ``+ g x million elements of an image input of 2+ channels`` (``image_elements``;
    ``weight_bytes`` per weight at the configuration's precision). A probe's weights stay in the cache between its
    timed runs; a network's were pushed out by its other layers and are read again on every inference
    (predictor_by_weights.json: beyond the cache the correction without these terms under-predicted by a median
    16-37 % in 7 of 8 configurations; over all architectures the error fell with the weights, Spearman -0.54 to
    -0.84 on ONNX Runtime and OpenVINO, about 0 on LiteRT). ``f`` needs no cache size: it is fitted for devices
    over SSH or adb too. Dense convolutions with a signed int8 input (``Kernel.sin``: OpenVINO INT8) have a weight
    of their own, ``b["conv_signed"]``, where a calibration's fitting architectures hold enough of them; otherwise,
    and in files older than it, they weigh as ``b["conv"]``. ``base``: the weight of the same runtime's predicted
    latency at one thread (``ConfigPredictor.base_threads``), which takes the kernel sums' place (``b`` all 0) at
    more threads: refit_base_threads.json. ``base_2d``: ``base`` weighs the one-thread prediction of the kernels
    other than 1-D convolutions, and those weigh by their own kernel sums at this thread count (``b["conv1d"]``): a
    second thread gains a 1-D model less than a 2-D one (LiteRT INT8, 30 unseen 1-D architectures: the one-thread
    prediction scaled as a 2-D model's put 43 % within +-10 % at 2 threads, where the 2-thread kernel sums alone were
    near every measurement); False in files before it."""

    a: float
    b: dict[str, float]
    c: float
    d: float = 0.0
    e: float = 0.0
    f: float = 0.0
    g: float = 0.0  # per million elements of a multi-channel image input (``image_elements``); 0 in older files
    cache_kb: float | None = None
    weight_bytes: int = 4
    base: float = 0.0
    base_2d: bool = False
    # the one-thread prediction's weight for a 1-D model (``family``), where the fit had 1-D architectures enough:
    # a second thread gains a 1-D model less than a 2-D one (p30: 0.57-0.94x its one-thread time against 0.50x);
    # None: ``base`` for every model (files before it)
    base_1d: float | None = None
    # groups left out of ``base``'s one-thread prediction, weighed by their own kernel sums at this thread count
    # (``b``): element-wise kernels that a second thread does not speed up (``fitting.apart_groups``); [] in older files
    apart: list[str] = []

    def in_base(self, k: Kernel) -> bool:
        """Whether ``k`` counts in the one-thread prediction ``base`` weighs (not a 1-D convolution under
        ``base_2d``, nor of a group ``apart``)."""
        return group_of(k) not in self.apart and not (self.base_2d and group_of(k) == "conv1d")

    def apply(self, ks: list[Kernel], kernel_ms: list[float], base_ms: float = 0.0) -> float:
        sums = group_sums(ks, kernel_ms)
        base = self.base_1d if self.base_1d is not None and family(ks) == "1d" else self.base
        return (self.a + base * base_ms + sum(self.weight(g) * v for g, v in sums.items()) + self.c * len(ks)
                + self.d * input_elements(ks) + self.f * weight_mb(ks, self.weight_bytes)
                + self.e * beyond_cache_mb(ks, self.cache_kb, self.weight_bytes) + self.g * image_elements(ks))

    def weight(self, group: str) -> float:
        """The group's ``b``, or its fallback group's where the calibration fitted none of its own."""
        return self.b.get(group, self.b.get(FALLBACK.get(group, ""), 0.0))


def group_sums(ks: list[Kernel], kernel_ms: list[float]) -> dict[str, float]:
    out = dict.fromkeys(GROUPS, 0.0)
    for k, ms in zip(ks, kernel_ms):
        out[group_of(k)] += ms
    return out


class ConfigPredictor(Strict):
    """One runtime, precision and thread count on one device."""

    format: str
    precision: str
    threads: int
    runtime: str | None = None
    runtime_version: str | None = None
    forests: dict[str, Forest]
    p50: Correction
    p90: Correction
    error_p50: ErrorStats
    error_p90: ErrorStats
    # the same error on each family's validation architectures ("1d": those with 1-D convolutions, "2d": the rest);
    # a prediction carries its model's family's (empty: files before it, whose error is the pooled one)
    family_errors: dict[str, FamilyError] = Field(default_factory=dict)
    n_probes: int
    n_fit_archs: int
    calibration_s: float | None = None
    # the calibration's anchors (``calibrate.anchor_archs``): their median p50 (ms), the device speed predicted at
    anchors: dict[str, float] = Field(default_factory=dict)
    # the p50 error when each prediction is scaled by the speed the anchors showed beside the measured model (the
    # predictor's own error, without the device's drift between calibration and measurement)
    error_p50_at_speed: ErrorStats | None = None
    # operator types no kernel models that the validation architectures held: the stated error covers graphs with
    # them; any other such operator in an artifact is left out of its prediction and named (``unmodelled_ops``)
    covered_ops: list[str] = Field(default_factory=list)
    # kernel types whose forest was fitted on their times inside the fitting architectures (the runtime's per-layer
    # counters, ``in_context``) rather than on the one-kernel probes
    in_context: list[str] = Field(default_factory=list)
    # with in-context forests: the p50 validation MAPE of the same calibration fitted on the probes alone
    probes_mape_pct: float | None = None
    # the architectures the stored correction was fitted on: the fitting and the validation ones, fitted again once
    # the error was measured on the latter (None: the fitting ones alone, as files before it)
    correction_archs: int | None = None
    # the thread count (1) whose prediction of the same runtime and precision stands in for this configuration's
    # kernel sums in its correction (``Correction.base``); None: the kernel sums (one thread, or files before it)
    base_threads: int | None = None

    def kernel_ms(self, ks: list[Kernel]) -> list[float]:
        out = [0.0] * len(ks)
        for kind in KERNEL_TYPES:
            idx = [i for i, k in enumerate(ks) if k.type == kind]
            if not idx:
                continue
            if kind not in self.forests:
                raise EdgeshipError(f"the {self.format} {self.precision} predictor has no {kind} kernels",
                                    "calibrate again (`edgeship profile RUN --calibrate`)")
            pred = self.forests[kind].latency_ms([ks[i] for i in idx])
            for i, p in zip(idx, pred):
                out[i] = float(p)
        return out


class PredictorFile(Strict):
    """``predictors/<device>.json``."""

    version: int = FILE_VERSION
    device: str
    created: str
    edgeship_version: str
    facts: dict[str, Any] = Field(default_factory=dict)  # what the calibrated machine said about itself
    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    configs: dict[str, ConfigPredictor] = Field(default_factory=dict)  # "format:precision:threads" -> predictor

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.model_dump_json())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def key(fmt: str, precision: str, threads: int) -> str:
    return f"{fmt}:{precision}:{threads}"


def path_for(device: str, directory: Path | None = None) -> Path:
    return (directory or PREDICTORS_DIR) / f"{device}.json"


def load(device: str, directory: Path | None = None, stale_ok: bool = False) -> PredictorFile | None:
    """The device's predictor file, or None when it has none (or, ``stale_ok``, when it was calibrated with other
    kernel features: a calibration then starts the file afresh); a broken file is one line naming it."""
    path = path_for(device, directory)
    if not path.is_file():
        return None
    try:
        pf = PredictorFile.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as e:
        why = format_validation_error(e, str(path), PredictorFile) if isinstance(e, ValidationError) else str(e)
        raise EdgeshipError(f"{path} is not a latency predictor ({why})",
                            "calibrate again: `edgeship profile RUN --calibrate --device NAME`") from None
    if pf.features != list(FEATURES):
        if stale_ok:
            return None
        raise EdgeshipError(f"{path} was calibrated with other kernel features than this edgeship reads "
                            f"({len(pf.features)} against {len(FEATURES)}): its forests cannot be read",
                            f"calibrate again: `edgeship profile RUN --calibrate --device {device}`")
    if pf.device != device:
        raise EdgeshipError(f"{path} holds the predictor of {pf.device!r}, not {device!r}",
                            f"rename it to {pf.device}.json or calibrate {device}")
    return pf


def predict(pf: PredictorFile, artifact_path: Path, fmt: str, precision: str, threads: int) -> Measurement:
    """The predicted latency of one artifact on ``pf.device``, with the predictor's measured error."""
    ks, unmodelled = read(artifact_path, fmt)
    return predict_kernels(pf, ks, fmt, precision, threads, unmodelled)


def predict_kernels(pf: PredictorFile, ks: list[Kernel], fmt: str, precision: str, threads: int,
                    unmodelled: dict[str, int] | None = None) -> Measurement:
    """The predicted latency of a model made of the kernels ``ks`` (as an artifact of ``fmt`` holds them) and of
    the ``unmodelled`` operators no kernel covers (``kernels.read``), which the prediction leaves out and names."""
    cfg = pf.configs.get(key(fmt, precision, threads))
    if cfg is None:
        raise EdgeshipError(f"the {pf.device} predictor has no {fmt} {precision} model at {threads} thread(s) "
                            f"(it has: {', '.join(pf.configs) or 'none'})",
                            f"calibrate it: `edgeship profile RUN --calibrate --device {pf.device}`")
    unmodelled = {op: n for op, n in (unmodelled or {}).items() if op not in cfg.covered_ops or op == FLOAT_SOFTMAX_MAP}
    # kernels of a type this configuration was calibrated without (1-D convolutions: TFLite, or files before them)
    # are left out and named, as an operator no kernel models is
    out: list[Kernel] = []
    for k in ks:
        if k.type == "eltwise" and k.type in cfg.forests and not eltwise_validated(k, cfg.covered_ops):
            shape = eltwise_tag(k).rsplit(":", 1)[1].replace("-per-channel", ", per-channel slopes")
            name = f"{ELTWISE_NAMES[k.k]} over a {shape} (not validated)"
        elif k.type not in cfg.forests:
            name = f"{k.type} (not calibrated)" if k.type != "eltwise" else f"{ELTWISE_NAMES[k.k]} (not calibrated)"
        else:
            out.append(k)
            continue
        unmodelled[name] = unmodelled.get(name, 0) + 1
    ks = out
    per_kernel = cfg.kernel_ms(ks)
    base50 = base90 = 0.0
    if cfg.base_threads is not None:
        if (base := pf.configs.get(key(fmt, precision, cfg.base_threads))) is None:
            raise EdgeshipError(f"the {pf.device} predictor's {fmt} {precision} model at {threads} thread(s) scales "
                                f"its prediction at {cfg.base_threads}, which the file lacks",
                                f"calibrate both: `edgeship profile RUN --calibrate --device {pf.device}`")
        on = [k for k in ks if cfg.p50.in_base(k)]
        base_kernels = base.kernel_ms(on)
        base50, base90 = base.p50.apply(on, base_kernels), base.p90.apply(on, base_kernels)
    p50 = max(1e-4, cfg.p50.apply(ks, per_kernel, base50))
    p90 = max(p50, cfg.p90.apply(ks, per_kernel, base90))
    fam = family(ks)
    e50, e90 = (cfg.family_errors[fam].p50, cfg.family_errors[fam].p90) if fam in cfg.family_errors else \
        (cfg.error_p50, cfg.error_p90)
    n_fam = (e50.n_archs or e50.n) if fam in cfg.family_errors else 0
    unvalidated = None
    if fam == "1d" and n_fam < MIN_FAMILY_ARCHS:
        unvalidated = (f"its validation held only {n_fam} 1-D architectures (at least {MIN_FAMILY_ARCHS} state a "
                       "1-D model's error)" if n_fam else
                       "its file states no error of its own for 1-D models (calibrated before edgeship measured one)")
    by_type: dict[str, float] = {}
    for k, ms in zip(ks, per_kernel):
        by_type[k.type] = by_type.get(k.type, 0.0) + ms
    method = (f"PREDICTED by the {pf.device} latency predictor ({len(ks)} kernels, per-kernel forests "
              f"calibrated on {cfg.n_probes} probes and {cfg.correction_archs or cfg.n_fit_archs} architectures on "
              f"{pf.device}{f'; its prediction at {cfg.base_threads} thread(s) scaled' if cfg.base_threads else ''}"
              f"): p50 error on {e50.n_archs or e50.n}{' 1-D' if n_fam and fam == '1d' else ''} architectures "
              f"held out of its fit ({e50.n} timings"
              f"{'; its correction then fitted again with them' if cfg.correction_archs else ''}): "
              f"MAPE {e50.mape_pct:.1f}%, "
              f"{e50.within_10pct:.0%} within +-10%; a budget is judged on the upper bound p90 x "
              f"(1 + {e90.upper_pct:.1f}%).")
    if unvalidated:
        method += f" It is a 1-D model and {unvalidated}: no budget passes on this prediction."
    if unmodelled:
        method += (f" It LEAVES OUT {ops_text(unmodelled)}, which no kernel of the predictor models: its error does "
                   f"not cover them, so no budget passes on this prediction.")
    info = Prediction(predictor=str(path_for(pf.device)), device=pf.device, created=pf.created, kernels=len(ks),
                      kernel_ms_by_type={k: round(v, 4) for k, v in by_type.items()},
                      p50_upper_ms=round(p50 * (1 + e50.upper_pct / 100), 4),
                      p90_upper_ms=round(p90 * (1 + e90.upper_pct / 100), 4),
                      mape_pct=e50.mape_pct, within_10pct=e50.within_10pct, upper_pct=e50.upper_pct,
                      p90_mape_pct=e90.mape_pct, p90_upper_pct=e90.upper_pct,
                      n_validation=e50.n_archs or e50.n, unmodelled_ops=dict(unmodelled or {}),
                      error_family=fam if fam in cfg.family_errors else None, unvalidated=unvalidated)
    return Measurement(source="predicted", p50_ms=round(p50, 4), p90_ms=round(p90, 4), threads=threads,
                       runtime=cfg.runtime, runtime_version=cfg.runtime_version, device=pf.device, method=method,
                       prediction=info, facts={"predicted_for": pf.device, **{k: pf.facts.get(k) for k in
                                                                              ("cpu", "uname") if k in pf.facts}})


# ---------------------------------------------------------------- fitting (scikit-learn: calibration only)
TREES = ("random", "extra")  # scikit-learn's RandomForestRegressor, ExtraTreesRegressor


def fit_forest(kernel_list: list[Kernel], ms: list[float], seed: int = 0, trees: str = "random") -> Forest:
    """A kernel type's forest: a linear base in MACs and traffic (relative least squares), trees on the log of the
    time over it. ``trees``: "random" (bootstrap, two samples a leaf: the in-context times, many per architecture)
    or "extra" (random thresholds, one sample a leaf: the one-kernel probes; benchmarks/probe_trees.py compares
    the two)."""
    from scipy.optimize import nnls  # heavy (scikit-learn's dependency): only calibration fits
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

    y = np.maximum(np.asarray(ms, dtype=np.float64), 1e-5)
    design = np.array([[1.0, k.macs / 1e6, k.traffic / 1e6] for k in kernel_list])
    coef, _ = nnls(design / y[:, None], np.ones_like(y))  # relative least squares: small kernels count too
    if not coef.any():
        coef = np.array([float(np.median(y)), 0.0, 0.0])
    base = np.maximum(design @ coef, 1e-6)
    x = np.array([k.features() for k in kernel_list])
    if trees not in TREES:
        raise ValueError(f"trees must be one of {TREES}, not {trees!r}")
    rf = (ExtraTreesRegressor(n_estimators=40, min_samples_leaf=1, max_features=0.8, random_state=seed)
          if trees == "extra" else
          RandomForestRegressor(n_estimators=40, min_samples_leaf=2, max_features=0.6, random_state=seed))
    rf.fit(x, np.log(y / base))
    return from_sklearn(rf, coef, len(ms))


def from_sklearn(rf, coef, n_samples: int) -> Forest:
    """A fitted ``RandomForestRegressor``'s or ``ExtraTreesRegressor``'s trees as arrays (thresholds as float32
    compares them)."""
    trees = [e.tree_ for e in rf.estimators_]
    return Forest(intercept=float(coef[0]), per_mmac=float(coef[1]), per_melem=float(coef[2]),
                  left=[t.children_left.tolist() for t in trees], right=[t.children_right.tolist() for t in trees],
                  feature=[t.feature.tolist() for t in trees], threshold=[t.threshold.tolist() for t in trees],
                  value=[t.value[:, 0, 0].tolist() for t in trees], n_samples=n_samples)


MIN_BEYOND_CACHE = 4  # fitting architectures whose weights exceed the cache, for the cache term to be fitted
IMAGE_TERM = True  # False: the correction without ``g``, as calibrations before it fitted (refits reproducing them)


def fit_correction(archs: list[tuple[list[Kernel], list[float]]], measured: list[float], cache_kb: float | None = None,
                   weight_bytes: int = 4, base: list[float] | None = None, base_2d: bool = False,
                   base_1d: bool = False, merged: tuple[str, ...] = (), apart: tuple[str, ...] = ()) -> Correction:
    """Least squares on relative error (every architecture weighs alike whatever its latency): one weight per
    kernel group, none negative, where there are architectures enough (else one for all); the weights term (not
    negative); the cache term (not negative) where the cache size is known and at least ``MIN_BEYOND_CACHE``
    architectures exceed it. ``base``: each architecture's predicted latency at one thread, weighed (not
    negative) in the kernel sums' place; ``base_2d``: that prediction is of the kernels other than 1-D convolutions,
    which weigh by their own sums (not negative; where at least ``MIN_BEYOND_CACHE`` architectures hold them);
    ``base_1d``: the 1-D models' one-thread prediction has a weight of its own (``Correction.base_1d``; where at
    least ``MIN_BEYOND_CACHE`` architectures are 1-D); the image-input term (not negative) where at least
    ``MIN_BEYOND_CACHE`` architectures read an image of 2+ channels. ``merged``: groups weighed with their fallback
    group whatever their count. ``apart``: with ``base``, groups that ``base`` leaves out, each weighed by its own
    sums (not negative)."""
    from scipy.optimize import lsq_linear  # heavy (scikit-learn's dependency): only calibration fits

    y = np.asarray(measured, dtype=np.float64)
    sums = [group_sums(ks, ms) for ks, ms in archs]
    own = [[s[g] for s in sums] for g in apart] if base is not None else []  # (before any group falls back)
    counts = np.array([len(ks) for ks, _ in archs], dtype=np.float64)
    elems = np.array([input_elements(ks) for ks, _ in archs])
    mbs = np.array([weight_mb(ks, weight_bytes) for ks, _ in archs])
    beyond = np.array([beyond_cache_mb(ks, cache_kb, weight_bytes) for ks, _ in archs])
    cached = int((beyond > 0).sum()) >= MIN_BEYOND_CACHE
    # a group of its own only where enough fitting architectures hold it (signed-input convolutions: OpenVINO INT8);
    # otherwise its kernels count with the group they fall back to
    groups = [g for g in GROUPS if g not in FALLBACK or (g not in merged and sum(s[g] > 0 for s in sums)
                                                          >= MIN_BEYOND_CACHE)]
    for s in sums:
        for g, into in FALLBACK.items():
            if g not in groups:
                s[into] += s.pop(g)
    per_group = len(archs) >= 4 * (len(groups) + 4 + cached) and base is None
    one_d = base is not None and base_2d
    if one_d and "conv1d" not in groups:
        raise ValueError(f"base_2d needs {MIN_BEYOND_CACHE} architectures with 1-D convolutions")
    is_1d = np.array([family(ks) == "1d" for ks, _ in archs])
    own_1d = base is not None and base_1d and int(is_1d.sum()) >= MIN_BEYOND_CACHE and not one_d
    if own_1d:
        assert base is not None
        cols = [list(np.where(is_1d, 0.0, base)), list(np.where(is_1d, base, 0.0)), *own]
    else:
        cols = [list(base), *([[s["conv1d"] for s in sums]] if one_d else []), *own] if base is not None else \
            [[s[g] for s in sums] for g in groups] if per_group else [[sum(s.values()) for s in sums]]
    images = np.array([image_elements(ks) for ks, _ in archs])
    by_image = IMAGE_TERM and int((images > 0).sum()) >= MIN_BEYOND_CACHE
    extra = [mbs, beyond] if cached else [mbs]
    extra += [images] if by_image else []
    # the per-kernel, input and weights terms only where the architectures are at least two per term: a quick
    # calibration's 4 fitting architectures fitted all of them and stated 952 % MAPE on its 6 validation ones
    few = len(archs) < 2 * (len(cols) + 4 + cached)
    terms = [] if few else [counts, elems, *extra]
    a_mat = np.column_stack([np.ones_like(y), *cols, *terms]) / y[:, None]
    lower = [-np.inf] + [0.0] * len(cols) + ([] if few else [-np.inf, -np.inf] + [0.0] * len(extra))
    coef = lsq_linear(a_mat, np.ones_like(y), bounds=(lower, np.inf)).x
    n = 1 + len(cols)
    coef = np.concatenate([coef, np.zeros(3 + cached + by_image)]) if few else coef
    b = dict(zip(groups, (float(v) for v in coef[1:n]))) if per_group else \
        dict.fromkeys(groups, 0.0 if base is not None else float(coef[1]))
    if one_d:
        b["conv1d"] = float(coef[2])
    b.update(zip(apart if own else (), (float(v) for v in coef[n - len(own):n])))
    return Correction(a=float(coef[0]), b=b, c=float(coef[n]), d=float(coef[n + 1]), f=float(coef[n + 2]),
                      e=float(coef[n + 3]) if cached else 0.0, g=float(coef[-1]) if by_image else 0.0,
                      cache_kb=cache_kb if cached and not few else None,
                      weight_bytes=weight_bytes, base=float(coef[1]) if base is not None else 0.0, base_2d=one_d,
                      base_1d=float(coef[2]) if own_1d else None, apart=list(apart) if own else [])


def error_stats(predicted: list[float], measured: list[float], noise: list[float] | None = None) -> ErrorStats:
    """The error of ``predicted`` against ``measured``. ``noise``: each timing over the median of its architecture's
    timings, minus 1. The upper bound is never below that noise's 95th percentile: a predictor that over-predicted
    every validation timing (its fit timed at another speed of the machine) would otherwise state a bound of 0 %,
    while one measurement of the same file on the device still lands that far above its usual time."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    rel = (p - m) / m
    under = m / p - 1
    noise_pct = round(max(0.0, float(np.percentile(noise, 95)) * 100), 2) if noise else None
    return ErrorStats(n=len(p), mape_pct=round(float(np.mean(np.abs(rel)) * 100), 2),
                      within_10pct=round(float(np.mean(np.abs(rel) <= 0.10)), 4),
                      upper_pct=round(max(0.0, float(np.percentile(under, 95)) * 100, noise_pct or 0.0), 2),
                      max_abs_pct=round(float(np.max(np.abs(rel)) * 100), 2), noise_pct=noise_pct)


def new_file(device: str, facts: dict) -> PredictorFile:
    return PredictorFile(device=device, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         edgeship_version=__version__, facts=facts)
