"""The calibration's anchors: how fast the device ran while it timed something.

Three fixed architectures (``calibrate.anchor_archs``) are timed in every chunk of every measuring process. Their
p50 against a reference gives a chunk's speed (``chunk_speed``: 1 = the reference, 1.5 = everything took 1.5x as
long). Two uses:

- ``normalize``: each chunk's results divided by its speed, so that probes and architectures timed minutes apart
  are in one currency (this VM drifts +-10 % between processes a minute apart while models timed side by side
  keep their ratios within about 1 %).
- ``steady``: a process that ran in another state of the device is measured again. On the AMD EPYC VM a 2-thread
  process ran either at 0.98-1.07 of the calibration's speed or at 1.41-1.69 (the second vCPU lost part of its
  time), nothing between, and in that state a model's 2-thread time is not its 1-thread time over a fixed factor
  (the 2-thread / 1-thread ratio went from 0.54-0.66 to 0.66-0.86): no scaling makes such a process's times the
  calibrated device's, so they are replaced rather than scaled. The probes' process is many chunks: a chunk of it
  that ran in that state has its probes timed again in a new process (``steady`` with ``again_probes``).
- ``faster_later``: a calibration that ran in the slow state throughout sets nothing aside (its own anchors are
  its only yardstick); the anchors timed again once every configuration is measured tell it (they run 0.6x).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_SPEED = 1.25  # a process whose anchors took longer than this over the device's fast state is measured again
RETRIES = 2  # new processes at most per process set aside


def chunk_speed(anchors: dict[str, dict], reference: dict[str, float]) -> float:
    """How slow the device ran while timing one chunk: the geometric mean over its anchors of p50 / reference
    (1 without anchors the reference knows)."""
    logs = [np.log(s["p50_ms"] / reference[n]) for n, s in anchors.items() if n in reference]
    return float(np.exp(np.mean(logs))) if logs else 1.0


def normalize(raws: list[dict], reference: dict[str, float] | None = None) -> tuple[list[dict], dict[str, float]]:
    """Each runner output's results scaled to the device's reference speed, and that reference (the median p50 of
    each anchor over every chunk of ``raws``, unless given). A chunk's speed is the geometric mean, over its
    anchors, of their p50 against the reference; its models' p50, p90 and mean are divided by it, and each
    scaled result keeps ``speed``. Without anchors (adb) the speed is 1."""
    if reference is None:
        reference = _per_anchor(raws, 50)
    out = []
    for raw in raws:
        speeds = [chunk_speed(chunk, reference) for chunk in raw.get("anchors") or []]
        scaled = {}
        for name, r in raw["results"].items():
            f = speeds[r["chunk"]] if speeds and "chunk" in r else 1.0
            scaled[name] = {**r, "speed": round(f, 4), "raw_p50_ms": r["p50_ms"], "raw_p90_ms": r["p90_ms"],
                            **{k: r[k] / f for k in ("p50_ms", "p90_ms", "mean_ms") if r.get(k) is not None}}
        out.append(scaled)
    return out, reference


def _per_anchor(raws: list[dict], q: float) -> dict[str, float]:
    """Each anchor's ``q``-th percentile p50 over every chunk of ``raws``."""
    by_anchor: dict[str, list[float]] = {}
    for raw in raws:
        for chunk in raw.get("anchors") or []:
            for name, s in chunk.items():
                by_anchor.setdefault(name, []).append(s["p50_ms"])
    return {name: float(np.percentile(v, q)) for name, v in by_anchor.items()}


def process_speed(raw: dict, reference: dict[str, float]) -> float:
    """A process's speed: the median of its chunks' (1 without anchors)."""
    speeds = [chunk_speed(chunk, reference) for chunk in raw.get("anchors") or []]
    return float(np.median(speeds)) if speeds else 1.0


def steady(raws: list[dict], again: Callable[[int, int], dict], retries: int = RETRIES,
           max_speed: float = MAX_SPEED,
           again_probes: Callable[[list[str], int], dict] | None = None) -> tuple[list[dict], list[dict]]:
    """``raws`` with every process after the first whose anchors ran more than ``max_speed`` times slower than the
    device's fast state (each anchor's lower quartile over every chunk of ``raws``) measured again by
    ``again(index, attempt)``, up to ``retries`` times, the fastest attempt kept; a process still that slow after
    them is dropped if another ran at speed (its median would mix the two states: the AMD EPYC VM's slow state held
    through both retries for 3 of 5 processes of one calibration, whose validation fell to 27 % within +-10 %);
    and the timings set aside (process, attempt, speed; ``dropped``; for the first process's chunks also chunk and
    probes). The first process (the probes:
    many chunks, each scaled on its own by ``normalize``) is kept whole; with ``again_probes(names, attempt)`` (a
    process timing only those probes) each of its chunks past ``max_speed`` has its probes timed again, the faster
    timing of each probe kept. A device that ran in one state throughout has nothing set aside."""
    reference = _per_anchor(raws, 25)
    kept, aside = list(raws), []
    if again_probes is not None and raws:
        kept[0], aside = _steady_chunks(raws[0], reference, again_probes, retries, max_speed)
    for i in range(1, len(raws)):
        speed = process_speed(kept[i], reference)
        for attempt in range(retries):
            if speed <= max_speed:
                break
            raw = again(i, attempt)
            s = process_speed(raw, reference)
            aside.append({"process": i, "attempt": attempt, "speed": round(max(s, speed), 4)})  # the slower one
            if s < speed:
                kept[i], speed = raw, s
    slow = [i for i in range(1, len(kept)) if process_speed(kept[i], reference) > max_speed]
    if len(slow) < len(kept) - 1:  # some ran at speed: those still slow would mix the two states, so they go
        aside += [{"process": i, "attempt": retries, "speed": round(process_speed(kept[i], reference), 4),
                   "dropped": True} for i in slow]
        kept = [r for i, r in enumerate(kept) if i not in slow]
    return kept, aside


def _steady_chunks(raw: dict, reference: dict[str, float], again: Callable[[list[str], int], dict], retries: int,
                   max_speed: float) -> tuple[dict, list[dict]]:
    """``raw`` (one process of many chunks) with the probes of every chunk past ``max_speed`` timed again (the
    faster timing of each probe kept, the chunks no probe refers to any longer dropped), and the chunks set aside."""
    anchors = list(raw.get("anchors") or [])
    speeds = [chunk_speed(c, reference) for c in anchors]
    results = dict(raw["results"])
    aside: list[dict] = []
    for attempt in range(retries):
        slow = sorted(n for n, r in results.items() if "chunk" in r and speeds[r["chunk"]] > max_speed)
        if not slow:
            break
        new = again(slow, attempt)
        offset = len(anchors)
        anchors += new.get("anchors") or []
        speeds += [chunk_speed(c, reference) for c in new.get("anchors") or []]
        lost: dict[int, list] = {}  # the first process's chunk -> [speed of each timing set aside, probes]
        first = {n: results[n]["chunk"] for n in slow}
        for n in slow:
            r = new["results"].get(n)
            if r is None or "chunk" not in r:
                continue
            r = {**r, "chunk": r["chunk"] + offset}
            old, now = speeds[results[n]["chunk"]], speeds[r["chunk"]]
            if now < old:
                results[n] = r
            entry = lost.setdefault(first[n], [0.0, 0])
            entry[0], entry[1] = max(entry[0], old, now), entry[1] + 1
        aside += [{"process": 0, "chunk": c, "attempt": attempt, "speed": round(s, 4), "probes": k}
                  for c, (s, k) in sorted(lost.items())]
    used = sorted({r["chunk"] for r in results.values() if "chunk" in r})
    index = {c: i for i, c in enumerate(used)}
    return ({**raw, "results": {n: {**r, "chunk": index[r["chunk"]]} if "chunk" in r else r
                                for n, r in results.items()},
             "anchors": [anchors[c] for c in used]}, aside)


def faster_later(reference: dict[str, float], later: dict, max_speed: float = MAX_SPEED) -> float | None:
    """The speed of ``later`` (a process timing the anchors after a configuration was calibrated against
    ``reference``) if it ran more than ``max_speed`` times faster: the configuration was measured in a slower
    state of the device throughout, and should be measured again; else None."""
    speed = process_speed(later, reference)
    return speed if speed * max_speed < 1 else None
