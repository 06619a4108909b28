"""``bench_runner.py --many DIR``: every artifact directory under DIR timed in one process (a latency predictor's
calibration probes: hundreds of small models, where a process per model would cost more than the timing), a chunk
of them loaded at a time and timed interleaved: R rounds, each visiting the chunk's models in a new seeded order
and timing N runs of each, so a burst of load on a shared machine spreads over all of them instead of falsifying a
few. ``--priority`` times ahead of other users' work where the runner may (``raise_priority``).

Anchors: artifact directories whose names start with ``_anchor`` are loaded once and timed in every chunk beside
its models; the output's ``anchors`` holds their summaries per chunk and each model's result its ``chunk``. A
machine whose speed drifts over seconds to minutes (a shared VM: +-10 % between runs a minute apart, while two
models timed side by side keep their ratio within about 1 %) is then read against the same models every time: the
caller scales each chunk by how fast its anchors ran (``calibrate.normalize``).

Every model is loaded with ``meta["interleaved"]``: ONNX Runtime sessions then share one process-wide thread pool
at more than one thread, as one model in a process has one (with a pool per session, each pool's threads spin
after its run and take the core the next session needs: a model timed at 1.35 ms alone took 4.4 ms among 30).

``bench_runner.py --many DIR --profile N``: instead of timing, every layer's time inside each model from the
runtime's own counters (``profile_many``: a calibration's in-context kernel times).

``bench_runner.py --dir D --thread-counts 1 2``: one artifact at several thread counts in one process, timed in
alternating rounds (``bench_threads``): thread scaling as a ratio of runs milliseconds apart.

Like bench_runner.py (which loads this file and passes itself in), it needs only the standard library, numpy and
the runtime, and never imports edgeship: both files are copied to a device that is calibrated.
"""

from __future__ import annotations

import json
import os
import random
import time

MAX_ROUNDS = 100_000  # --min-seconds stops here whatever the total


def raise_priority() -> str | None:
    """Put this process ahead of other users' work while it times (``--priority``): a session of its own whose
    autogroup gets nice -20 (Linux schedules sessions, not processes, against each other when autogroup is on),
    else plain nice -20. On a dedicated device it changes nothing; on a shared machine it keeps the other jobs
    from stretching the timed runs. Needs root (or CAP_SYS_NICE): without it, nothing changes and None says so."""
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write("-20")
        return "autogroup nice -20"
    except OSError:
        pass
    try:
        os.nice(-20 - os.nice(0))
        return "nice -20"
    except OSError:
        return None


def loaded(br, np, directory: str, threads: int, seed: int, interleaved: bool = False, profile: bool = False):
    """The artifact in ``directory`` loaded by the runner's loader for its format at ``threads`` (``interleaved``:
    the loaders' settings for many models in one process; ``profile``: with the runtime's per-layer counters);
    returns its run function and the loader's info."""
    with open(os.path.join(directory, "model.json")) as f:
        art = json.load(f)
    runtime, _ = br.import_runtime(art["format"])
    meta = {**(art.get("meta") or {}), **({"interleaved": True} if interleaved else {})}
    run, info, _infer = br.LOADERS[art["format"]](runtime, os.path.join(directory, art["main"]), threads, meta,
                                                  seed, np, profile=profile)
    return run, info


def load(br, np, directory: str, threads: int, seed: int, warmup: int, interleaved: bool):
    """The artifact in ``directory`` loaded (``loaded``) and warmed up; returns its run function."""
    run = loaded(br, np, directory, threads, seed, interleaved)[0]
    for _ in range(max(1, warmup)):
        run()
    return run


def block(run, runs: int) -> list[float]:
    """``runs`` timed calls of ``run``, in milliseconds each."""
    clock, out = time.perf_counter_ns, []
    for _ in range(runs):
        t = clock()
        run()
        out.append((clock() - t) / 1e6)
    return out


def bench_many(args, br) -> dict:
    """Every artifact directory under ``args.many``, timed interleaved in chunks; ``br``: bench_runner."""
    priority = raise_priority() if args.priority else None

    try:
        import numpy as np
    except ImportError:
        raise br.Missing("numpy", "numpy") from None
    names = sorted(d for d in os.listdir(args.many) if os.path.isfile(os.path.join(args.many, d, "model.json")))
    anchor_names = [n for n in names if n.startswith("_anchor")]
    names = [n for n in names if n not in anchor_names]
    results: dict = {}
    rng = random.Random(args.seed)

    def many_load(name: str):
        return load(br, np, os.path.join(args.many, name), args.threads, args.seed, args.warmup, interleaved=True)

    anchors = {name: many_load(name) for name in anchor_names}  # an anchor the runtime refuses fails the whole run
    per_chunk: list = []
    for chunk, start in enumerate(range(0, max(1, len(names)), args.chunk)):
        runs = dict(anchors)
        for name in names[start:start + args.chunk]:
            try:
                runs[name] = many_load(name)
            except br.Missing:
                raise
            except Exception as e:  # one probe the runtime refuses must not cost the others
                results[name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
        samples: dict = {name: [] for name in runs}
        timed: dict = {name: 0.0 for name in runs}
        rounds, min_ms = 0, args.min_seconds * 1e3
        # --rounds rounds, then (--min-seconds) on until every model's timed runs add up to that long
        while rounds < args.rounds or (runs and min(timed.values()) < min_ms and rounds < MAX_ROUNDS):
            rounds += 1
            order = list(runs)
            rng.shuffle(order)
            for name in order:
                ms = block(runs[name], args.runs)
                samples[name] += ms
                timed[name] += sum(ms)
        for name, ss in samples.items():
            if name in anchors:
                continue
            results[name] = {**br.summarize(np, ss), "samples_ms": [round(x, 4) for x in ss], "runs": len(ss),
                             "chunk": chunk}
        if anchors:
            per_chunk.append({name: {**br.summarize(np, samples[name]), "runs": len(samples[name])}
                              for name in anchors})
    return {"ok": True, "results": results, "anchors": per_chunk, "threads": args.threads, "runs": args.runs,
            "rounds": args.rounds, "priority": priority, "facts": br.device_facts()}


def run(args, br) -> dict:
    """bench_runner's ``--many`` or ``--thread-counts`` mode; ``br``: bench_runner."""
    if args.thread_counts and (args.many or args.samples or args.profile or min(args.thread_counts) < 1):
        raise ValueError("--thread-counts (each >= 1) times one --dir artifact, without --many, --samples or --profile")
    if args.many and args.profile:
        return profile_many(args, br)
    return bench_many(args, br) if args.many else bench_threads(args, br)


def profile_many(args, br) -> dict:
    """``--many DIR --profile N``: each artifact under DIR (anchors aside) loaded with the runtime's per-layer
    counters, warmed up, run N times; ``results`` {name: {"layers": every layer's row (the middle mean of its us
    over all those runs, the warm-up's included: the counters record every run; with its input and output
    shapes)}}. No latency: counters slow a run, and a calibration reads only where the time goes inside a model
    (``devices.in_context``)."""
    import numpy as np

    results: dict = {}
    for name in sorted(d for d in os.listdir(args.many) if not d.startswith("_anchor") and
                       os.path.isfile(os.path.join(args.many, d, "model.json"))):
        try:
            run, info = loaded(br, np, os.path.join(args.many, name), args.threads, args.seed, profile=True)
            for _ in range(max(1, args.warmup) + args.profile):
                run()
            source, rows = info["layers"]()
        except br.Missing:
            raise
        except Exception as e:  # one the runtime refuses must not cost the others
            results[name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
            continue
        results[name] = {"source": source, "layers": rows}
    return {"ok": True, "results": results, "threads": args.threads, "profile": args.profile,
            "facts": br.device_facts()}


def bench_threads(args, br) -> dict:
    """``--dir D --thread-counts T1 T2 ...``: one artifact loaded once per thread count in this process and timed in
    ``--rounds`` rounds, each timing ``--runs`` runs at every count in a new seeded order. The ratio of two counts'
    p50s is then taken from runs milliseconds apart, per round: timed in separate processes minutes apart, a 2-thread
    p50 over a 1-thread one carries the shared machine's drift as well (+-15 % on a ratio at 5 repeats here). Each
    copy keeps its own thread pool (no ``interleaved``): a one-thread session has none, as in an application.
    ``scaling``: {count: median over rounds of the first count's p50 / this count's p50}."""
    try:
        import numpy as np
    except ImportError:
        raise br.Missing("numpy", "numpy") from None
    with open(os.path.join(args.dir, "model.json")) as f:
        art = json.load(f)
    counts = list(dict.fromkeys(args.thread_counts))
    runs = {t: load(br, np, args.dir, t, args.seed, args.warmup, interleaved=False) for t in counts}
    rng = random.Random(args.seed)
    samples: dict = {t: [] for t in counts}
    per_round: dict = {t: [] for t in counts}
    for _ in range(args.rounds):
        order = list(counts)
        rng.shuffle(order)
        for t in order:
            ms = block(runs[t], args.runs)
            samples[t] += ms
            per_round[t].append(float(np.median(ms)))
    first = counts[0]
    scaling = {str(t): round(float(np.median([a / b for a, b in zip(per_round[first], per_round[t])])), 4)
               for t in counts[1:]}
    return {"ok": True, "target": art.get("target"), "format": art["format"], "precision": art.get("precision"),
            "results": {str(t): {**br.summarize(np, samples[t]), "runs": len(samples[t]),
                                 "round_p50_ms": [round(x, 6) for x in per_round[t]]} for t in counts},
            "scaling": scaling, "thread_counts": counts, "rounds": args.rounds, "runs": args.runs,
            "facts": br.device_facts()}
