"""``bench_runner.py --many DIR``: every artifact directory under DIR timed in one process (a latency predictor's
calibration probes: hundreds of small models, where a process per model would cost more than the timing), a chunk
of them loaded at a time and timed interleaved: R rounds, each visiting the chunk's models in a new seeded order
and timing N runs of each, so a burst of load on a shared machine spreads over all of them instead of falsifying a
few. ``--priority`` times ahead of other users' work where the runner may (``raise_priority``).

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


def bench_many(args, br) -> dict:
    """Every artifact directory under ``args.many``, timed interleaved in chunks; ``br``: bench_runner."""
    priority = raise_priority() if args.priority else None

    try:
        import numpy as np
    except ImportError:
        raise br.Missing("numpy", "numpy") from None
    names = sorted(d for d in os.listdir(args.many) if os.path.isfile(os.path.join(args.many, d, "model.json")))
    results: dict = {}
    rng = random.Random(args.seed)
    clock = time.perf_counter_ns
    for start in range(0, len(names), args.chunk):
        runs = {}
        for name in names[start:start + args.chunk]:
            d = os.path.join(args.many, name)
            try:
                with open(os.path.join(d, "model.json")) as f:
                    art = json.load(f)
                runtime, _ = br.import_runtime(art["format"])
                run, _info, _infer = br.LOADERS[art["format"]](runtime, os.path.join(d, art["main"]), args.threads,
                                                               art.get("meta") or {}, args.seed, np)
                for _ in range(max(1, args.warmup)):
                    run()
                runs[name] = run
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
                run = runs[name]
                for _ in range(args.runs):
                    t = clock()
                    run()
                    samples[name].append((clock() - t) / 1e6)
                    timed[name] += samples[name][-1]
        for name, ss in samples.items():
            results[name] = {**br.summarize(np, ss), "samples_ms": [round(x, 4) for x in ss], "runs": len(ss)}
    return {"ok": True, "results": results, "threads": args.threads, "runs": args.runs, "rounds": args.rounds,
            "priority": priority, "facts": br.device_facts()}
