"""Fitting a configuration's latency predictor from its kernel data set (``calibrate.dataset``): the per-kernel
forests (on the one-kernel probes, or on the kernels' times inside the fitting architectures, ``in_context``), the
correction from kernel sums to a model's latency, and its error on the validation architectures it was not fitted on.

At more than one thread, where the same runtime and precision were calibrated at one thread, the correction weighs
that configuration's prediction in the kernel sums' place (``base``): on this VM the one-thread timings are the
steady ones, and a model's second thread gains what its one-thread time and kernel count say better than what the
two-thread kernel forests sum to (``benchmarks/refit_base_threads.py``). The stated error stays held out: the
validation architectures' one-thread prediction comes from that correction fitted on the fitting architectures alone.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeship.devices import in_context
from edgeship.devices import predictor as pred
from edgeship.devices.kernels import KERNEL_TYPES, ONE_D, Kernel
from edgeship.errors import EdgeshipError

Base = tuple[pred.ConfigPredictor, dict]  # the one-thread configuration and its kernel data set
# kernel groups a second thread speeds up little or not at all, weighed apart from the one-thread prediction
# (``apart_groups``): element-wise kernels. LiteRT runs an int8 softmax in its own single-threaded kernel; three of
# predictor_zen4_p40.json's architectures with a score map, within 2 % at one thread, were predicted 12-21 % low at
# 2 threads. Every class apart, each
# with a weight of its own, rather than the softmax alone: the held-out validation error of that calibration's LiteRT
# INT8 at 2 threads, 60 -> 78 % within +-10 % (MAPE 12.3 -> 10.3 %; the softmax alone: 61 %, 11.8 %; refit_apart.json)
APART = ("eltwise1", "eltwise2", "eltwise3", "eltwise4")


def fit(data: dict, fmt: str, precision: str, threads: int, seed: int = 0,
        cache_kb: int | None = None, probe_trees: str = "extra", refit_all: bool = True,
        base: Base | None = None, one_d_base: str = "auto", one_d_in_context: bool = False,
        eltwise_groups: bool = True) -> pred.ConfigPredictor:
    """The predictor of one configuration from its kernel data set. A probe's time less its trailing global
    pool's (predicted by the pool's own forest, fitted first) is its kernel's time. Where the fitting
    architectures carry per-layer counters (``in_context``), each kernel type that has enough in-context times is
    fitted on them instead (``ConfigPredictor.in_context`` names those types; ``probes_mape_pct`` keeps the
    validation error of the probes-only predictor beside it). ``cache_kb``: the device's L2 cache per core, for
    the correction's cache term (None: no such term). ``probe_trees``: the probes' forests' kind
    (``predictor.fit_forest``); the in-context forests are random forests. ``refit_all``: the correction is
    fitted again on the validation architectures too once its error is measured (False: as before it). ``base``:
    the same runtime and precision at one thread, fitted, with its data set: its prediction takes the kernel sums'
    place in this configuration's correction (the module's docstring). ``one_d_base``, how a 1-D model's one-thread
    prediction stands in at more threads: ``own_ratio`` (with a weight of its own, ``Correction.base_1d``),
    ``never`` (as a 2-D model's), or its 1-D kernels on their own sums at this thread count and the rest within the
    one-thread prediction (``base_2d``): ``always``, or ``in_context`` where the 1-D forests were fitted on
    in-context times; ``auto``: ``own_ratio`` for LiteRT, ``never`` for the others. ``one_d_in_context``: the 1-D
    convolutions' forests too are fitted on their in-context times; by default they rest on the probes.
    ``eltwise_groups``: each class of element-wise kernels has a correction weight of its own (else they weigh with
    the other kernels; refit_eltwise_groups.json).
    refit_in_context_1d.json chose both (three calibrations' kept data, two runtimes, three machines, each scored on
    30 unseen 1-D architectures): the in-context 1-D forests had a higher MAPE in 7 of 8 configurations (one tie in
    the fraction within +-10 %, one better: LiteRT at 2 threads on p30's data); at 2 threads the
    1-D models' own weight did better on LiteRT (40 -> 63 % and 47 -> 77 % within +-10 %) and on ONNX Runtime
    INT8 (83 -> 87 %), much worse on ONNX Runtime FP32 (77 -> 30 %)."""
    forests: dict[str, pred.Forest] = {}
    probes: dict[str, tuple[list[Kernel], list[float]]] = {}
    for kinds in (("gpool", "fc"), tuple(t for t in KERNEL_TYPES if t not in ("gpool", "fc"))):
        for t in kinds:
            ks, ms = [], []
            for row in data["probes"]:
                k = Kernel(**row["kernel"])
                if k.type != t:
                    continue
                held = [x for x in row["kernels"] if x["type"] == t and (t != "eltwise" or x["k"] == k.k)]
                if len(held) == 1:  # the activation as the artifact holds it (an INT8 graph may have folded it)
                    k = replace(k, act=held[0].get("act", 0))
                if t == "eltwise" and held:  # its shape as the reader gives it (a TFLite file's layout)
                    k = Kernel(**held[0])
                rest = [Kernel(**x) for x in row["kernels"] if x["type"] != t]
                others = sum(_kernel_ms(forests, rest))
                ks.append(k)
                # an operator the lowering wrote as several (TFLite: a PReLU as two MULs and a SUB): each its share
                ms.append(max(row["p50_ms"] - others, 0.1 * row["p50_ms"]) / (len(held) if t == "eltwise" and held
                                                                               else 1))
            probes[t] = (ks, ms)
            if len(ks) >= 3:
                forests[t] = pred.fit_forest(ks, ms, seed, probe_trees)
    wb = 1 if "int8" in precision else 2 if precision == "fp16" else 4
    apart = apart_groups(data["archs"]) if base is not None else ()
    based = (base[0].threads, _base_predictions(base, cache_kb, wb, apart), apart) if base is not None else None
    merged = () if eltwise_groups else tuple(g for g in pred.GROUPS if g.startswith("eltwise"))
    best = _corrected(data, fmt, precision, threads, forests, [], cache_kb, wb, refit_all, based, one_d_base, merged)
    fitting = [a for a in data["archs"] if a["role"] == "fit"]
    if fmt in in_context.FORMATS and any(a.get("layers") for a in fitting):
        inside, types = dict(forests), []
        for t in KERNEL_TYPES:
            if t in ONE_D and not one_d_in_context:
                continue
            ks, ms = in_context.samples(fitting, t, fmt)
            if len(ks) >= in_context.MIN_SAMPLES:
                inside[t] = pred.fit_forest(*beyond(ks, ms, *probes.get(t, ([], []))), seed)
                types.append(t)
        if types:
            probes_mape = best.error_p50.mape_pct
            best = _corrected(data, fmt, precision, threads, inside, types, cache_kb, wb, refit_all, based, one_d_base,
                              merged)
            best.probes_mape_pct = probes_mape
    return best


def beyond(ks: list[Kernel], ms: list[float], probe_ks: list[Kernel], probe_ms: list[float]
           ) -> tuple[list[Kernel], list[float]]:
    """A kernel type's in-context times, and its probes beyond their reach: those of more MACs or more traffic than
    any kernel of the fitting architectures. Their classifiers all have 10 outputs, so an in-context fc forest
    alone extrapolated its linear base from 16-256 x 10 layers to MobileNetV2's 1280 x 1000 classifier: 3.2 ms
    predicted, over 5x the 0.29 ms a probe of that shape took (p26's ONNX Runtime FP32 data set, AVX2 EPYC;
    tests/devices/test_predictor.py), the model +21 % (refit_probes_beyond.json)."""
    most_macs, most_traffic = max(k.macs for k in ks), max(k.traffic for k in ks)
    classes = {k.k for k in ks if k.type == "eltwise"}  # an element-wise class no counter names: its probes
    far = [(k, m) for k, m in zip(probe_ks, probe_ms)
           if k.macs > most_macs or k.traffic > most_traffic or (k.type == "eltwise" and k.k not in classes)]
    return ks + [k for k, _ in far], ms + [m for _, m in far]


def _corrected(data: dict, fmt: str, precision: str, threads: int, forests: dict[str, pred.Forest],
               in_context_types: list[str], cache_kb: int | None, wb: int, refit_all: bool = True,
               based: tuple[int, dict[str, dict[str, float]], tuple[str, ...]] | None = None,
               one_d_base: str = "auto", merged: tuple[str, ...] = ()) -> pred.ConfigPredictor:
    """The predictor with these forests: its correction fitted on the fitting architectures, its error measured on
    the validation ones. ``wb``: bytes per weight at the configuration's precision."""
    empty = pred.ErrorStats(n=0, mape_pct=0, within_10pct=0, upper_pct=0, max_abs_pct=0)
    unit = pred.Correction(a=0, b=dict.fromkeys(pred.GROUPS, 1.0), c=0)
    cfg = pred.ConfigPredictor(format=fmt, precision=precision, threads=threads, forests=forests, p50=unit, p90=unit,
                               error_p50=empty, error_p90=empty, n_probes=len(data["probes"]), n_fit_archs=0,
                               in_context=in_context_types)
    held: dict[str, dict[str, float]] = {}  # base (one-thread) prediction per architecture: held out, as stored
    apart: tuple[str, ...] = ()
    if based is not None:
        cfg.base_threads, held, apart = based
    rows: dict[str, list] = {"fit": [], "validate": []}
    for a in _predictable(data["archs"], forests):
        if not held or a["name"] in held["held_p50"]:
            ks = [Kernel(**x) for x in a["kernels"]]
            rows[a["role"]].append(((ks, cfg.kernel_ms(ks)), a))
    fit_rows, val = rows["fit"], rows["validate"]
    if len(fit_rows) < 3 or not val:
        raise EdgeshipError(f"calibration of {fmt} {precision}: only {len(fit_rows)} fitting and {len(val)} "
                            "validation architectures were measured", "see the log above for what failed")
    # a 1-D model's second thread (``fit``'s ``one_d_base``): the 1-D models' one-thread prediction with a weight of
    # its own (``Correction.base_1d``), or their 1-D kernels on their own sums at this thread count and the rest
    # within the one-thread prediction (``Correction.base_2d``), where enough fitting architectures hold 1-D
    # convolutions
    if one_d_base == "auto":
        one_d_base = "own_ratio" if fmt == "tflite" else "never"
    wanted = one_d_base == "always" or (one_d_base == "in_context" and "conv1d" in in_context_types)
    own_ratio = one_d_base == "own_ratio"
    two_d = "2d" if held and wanted and sum(
        any(pred.group_of(k) == "conv1d" for k in r[0][0]) for r in fit_rows) >= pred.MIN_BEYOND_CACHE else ""

    def fitted(rows: list, q: str, which: str) -> pred.Correction:
        return pred.fit_correction([r[0] for r in rows], [r[1][f"{q}_ms"] for r in rows], cache_kb, wb,
                                   [held[f"{which}{two_d}_{q}"][r[1]["name"]] for r in rows] if held else None,
                                   base_2d=bool(two_d), base_1d=own_ratio, merged=merged, apart=apart)

    cfg.p50, cfg.p90 = fitted(fit_rows, "p50", "held"), fitted(fit_rows, "p90", "held")

    def against(q: str, correction: pred.Correction, at_speed: bool = False, of: list | None = None
                ) -> pred.ErrorStats:
        """The error on the validation architectures (``of``: some of them) against each process's own timing
        (unscaled: what a user measuring later meets, drift included), or, ``at_speed``, the prediction scaled by
        that process's speed."""
        rows = val if of is None else of
        p, m, noise = [], [], []
        for (ks, kms), a in rows:
            y = correction.apply(ks, kms, held[f"held{two_d}_{q}"][a["name"]] if held else 0.0)
            raws = a.get(f"raw_{q}_ms") or [a[f"{q}_ms"]]
            mid = float(np.median(raws))
            for raw, f in zip(raws, a.get("speed") or [1.0]):
                p.append(y * f if at_speed else y)
                m.append(raw)
                noise.append(raw / mid - 1)
        return pred.error_stats(p, m, None if at_speed else noise).model_copy(update={"n_archs": len(rows)})

    cfg.error_p50, cfg.error_p90 = against("p50", cfg.p50), against("p90", cfg.p90)
    for fam in ("1d", "2d"):  # each family's own error: a 1-D model's prediction carries the 1-D one
        if of := [r for r in val if pred.family(r[0][0]) == fam]:
            cfg.family_errors[fam] = pred.FamilyError(p50=against("p50", cfg.p50, of=of),
                                                      p90=against("p90", cfg.p90, of=of))
    # operators beyond the kernels that the validation architectures held: the stated error was measured with them
    # in the graph
    # and the element-wise kernels they held, by class and shape (``predictor.eltwise_tag``)
    cfg.covered_ops = sorted(set().union(*(a.get("unmodelled") or {} for _, a in val)) |
                             {pred.eltwise_tag(k) for (ks, _), _ in val for k in ks if k.type == "eltwise"})
    if data.get("anchors"):
        cfg.anchors = {k: round(v, 5) for k, v in data["anchors"].items()}
        cfg.error_p50_at_speed = against("p50", cfg.p50, at_speed=True)
    cfg.n_fit_archs = len(fit_rows)
    if refit_all:  # the error stated is the held-out one; the correction stored is fitted on both sets, as cross-
        # validation fits its final model on every fold (refit_all_archs.json: lower MAPE in 11 of 16 configurations)
        cfg.p50, cfg.p90 = fitted(fit_rows + val, "p50", "stored"), fitted(fit_rows + val, "p90", "stored")
        cfg.correction_archs = len(fit_rows) + len(val)
    return cfg


def _predictable(archs: list[dict], forests: dict[str, pred.Forest]) -> list[dict]:
    """The architectures whose every kernel type has a forest (a type whose probes all failed to lower has none; its
    architectures then neither fit the correction nor state its error, and a prediction names such kernels)."""
    return [a for a in archs if all(x["type"] in forests for x in a["kernels"])]


def _kernel_ms(forests: dict[str, pred.Forest], ks: list[Kernel]) -> list[float]:
    return [float(forests[k.type].latency_ms([k])[0]) if k.type in forests else 0.0 for k in ks]


def apart_groups(archs: list[dict]) -> tuple[str, ...]:
    """The groups of ``APART`` that at least ``MIN_BEYOND_CACHE`` fitting architectures hold: at more threads they
    weigh by their own kernel sums, out of the one-thread prediction (``Correction.apart``)."""
    held = [{pred.group_of(Kernel(**x)) for x in a["kernels"]} for a in archs if a["role"] == "fit"]
    return tuple(g for g in APART if sum(g in h for h in held) >= pred.MIN_BEYOND_CACHE)


def _base_predictions(base: Base, cache_kb: int | None, wb: int, apart: tuple[str, ...] = ()
                      ) -> dict[str, dict[str, float]]:
    """The one-thread configuration's p50 and p90 prediction of each of its measured architectures: ``stored_*`` with
    its stored correction, ``held_*`` with its correction fitted on its fitting architectures alone (so that a
    validation architecture's prediction at more threads is held out of every fit it rests on); ``*2d_*`` the same
    of each architecture's kernels other than 1-D convolutions (``Correction.base_2d``); both without the groups
    ``apart``."""
    cfg, data = base
    rows = [(a, [Kernel(**x) for x in a["kernels"]]) for a in _predictable(data["archs"], cfg.forests)]
    kms = {a["name"]: cfg.kernel_ms(ks) for a, ks in rows}
    fitting = [(ks, kms[a["name"]]) for a, ks in rows if a["role"] == "fit"]
    out: dict[str, dict[str, float]] = {}
    for q in ("p50", "p90"):
        held = pred.fit_correction(fitting, [a[f"{q}_ms"] for a, _ in rows if a["role"] == "fit"], cache_kb, wb)
        for tag, keep in (("", lambda k: pred.group_of(k) not in apart),
                          ("2d", lambda k: pred.group_of(k) not in (*apart, "conv1d"))):
            on = {a["name"]: [(k, m) for k, m in zip(ks, kms[a["name"]]) if keep(k)] for a, ks in rows}
            out[f"held{tag}_{q}"] = {n: held.apply([k for k, _ in x], [m for _, m in x]) for n, x in on.items()}
            out[f"stored{tag}_{q}"] = {n: getattr(cfg, q).apply([k for k, _ in x], [m for _, m in x])
                                       for n, x in on.items()}
    return out
