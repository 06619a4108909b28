"""Budget-driven search per target (the recipe's ``search:``), with Optuna.

The space is what the recipe's passes offer: how many blocks ``drop_blocks`` removes and the MACs ratio
``prune`` keeps (the recipe's own settings of those passes otherwise: importance, rounding, steps, fine-tune).
Each candidate runs that compression prefix through the stage cache (candidates sharing a ``drop_blocks`` count
share that stage), and is scored by its validation top-1 after the prefix's own fine-tuning and by its latency on
the target's device: predicted from its kernels by the device's calibrated predictor (the upper error bound is
what must meet the budget), or, for a target on this machine without a predictor, measured. A measured latency
is never one timing (on a shared machine one 30-run timing of the same model varied 2x): the search's
``timing`` sets rounds, each a fresh process, and the budget is judged on the median of the rounds' p90s; when
the budget lies within the rounds' spread of that median, as many rounds again are timed and the median of all
judges (the record keeps every round, the spread and what the number is). Optuna's TPE sampler proposes
candidates, with the budget and the accuracy floor as constraints. The ``finalists`` most accurate candidates
within the constraints are fine-tuned briefly (the recipe's ``distill``, ``finalist_epochs`` on
``finalist_samples``), lowered to the target's format and measured where the device is this machine, all of
them interleaved in the same rounds (else predicted from the artifact); the winner is the most accurate
finalist whose judged latency meets the budget.
It then goes through the recipe's whole pipeline (the prefix from the cache, then the recovery passes, distill
and QAT) and is exported for the search's targets.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeship.devices import catalog
from edgeship.devices import predictor as predictors
from edgeship.devices.calibrate import lower
from edgeship.devices.kernels import ops_text, read
from edgeship.devices.measure import RunArtifact, measure_interleaved, measure_rounds
from edgeship.errors import EdgeshipError
from edgeship.models.load import clone_module, model_stats
from edgeship.pipeline.base import PassConfig, PassContext, registry
from edgeship.pipeline.runner import StageCache, run_passes
from edgeship.pipeline.training import evaluate
from edgeship.progress import info
from edgeship.recipe import Recipe, SearchSpec
from edgeship.record import LatencyRounds, Measurement, SearchCandidate, SearchRecord

PREFIX = ("drop_blocks", "prune")  # the passes whose settings the search chooses
ANCHOR = "recipe-model"  # latency_vs_recipe: the recipe's own model, timed beside every candidate
REFUSED = "refused"  # a candidate's latency_source when a pass refused its settings (no model, never feasible)


@dataclass
class Scored:
    latency_ms: float  # what the budget is judged on: a measured p90, or a predicted p90's upper bound
    p50_ms: float
    p90_ms: float
    source: str  # measured (host) or predicted
    note: str
    timing: LatencyRounds | None = None  # measured: the rounds latency_ms is the median of
    vs_recipe: float | None = None  # latency_vs_recipe: the median of the rounds' p90 over the recipe's model's


def recipe_point(passes: list[tuple[str, PassConfig]]) -> tuple[int, float]:
    """The (blocks dropped, MACs ratio kept) the recipe's own passes give: what ``variant_passes`` would rebuild.
    A prune by ``channel_ratio`` or against the original model has no ratio in this space: 1.0 (never in it)."""
    blocks, ratio = 0, 1.0
    for name, cfg in passes:
        if name == "drop_blocks":
            blocks = int(getattr(cfg, "blocks", 0) or 0)
        elif name == "prune":
            exact = getattr(cfg, "channel_ratio", None) is None and getattr(cfg, "relative_to", "input") == "input"
            ratio = float(cfg.macs_ratio) if exact and getattr(cfg, "macs_ratio", None) else 1.0
    return blocks, ratio


def variant_passes(passes: list[tuple[str, PassConfig]], blocks: int, macs_ratio: float,
                   prefix_only: bool = False) -> list[tuple[str, PassConfig]]:
    """The recipe's passes with ``drop_blocks`` removing ``blocks`` (none: the pass is left out) and ``prune``
    keeping ``macs_ratio`` of its input's MACs (1.0: left out); a pass the recipe lacks is added with its
    defaults. ``prefix_only``: stop after those two."""
    reg = registry()
    out: list[tuple[str, PassConfig]] = []
    names = [n for n, _ in passes]
    if "drop_blocks" not in names and blocks > 0:
        out.append(("drop_blocks", reg["drop_blocks"].Config(blocks=blocks)))
    if "prune" not in names and macs_ratio < 1.0:
        out.append(("prune", reg["prune"].Config(macs_ratio=macs_ratio, round_to=4)))
    for name, cfg in passes:
        if name == "drop_blocks":
            if blocks > 0:
                out.append((name, cfg.model_copy(update={"blocks": blocks})))
        elif name == "prune":
            if macs_ratio < 1.0:
                out.append((name, cfg.model_copy(update={"macs_ratio": macs_ratio, "channel_ratio": None,
                                                         "relative_to": "input"})))
        elif prefix_only:
            break
        else:
            out.append((name, cfg))
    return out


class Search:
    """One ``search:`` entry of a recipe, run against one export's data, cache and record."""

    def __init__(self, spec: SearchSpec, recipe: Recipe, passes: list[tuple[str, PassConfig]], ctx: PassContext,
                 cache: StageCache, data_spec: dict):
        self.spec, self.recipe, self.passes, self.ctx = spec, recipe, passes, ctx
        self.cache, self.data_spec = cache, data_spec
        self.target, self.device, self.budget, self.floor, self.pf = preflight(spec, recipe)
        self.rel = spec.latency_vs_recipe  # a budget relative to the recipe's own model (None: absolute only)
        self._timed = 0  # timings so far: each gets its own seed for the order of its rounds
        self._anchor: Path | None = None  # latency_vs_recipe: the recipe's own model, lowered for the target
        self._anchor_p90s: list[float] = []  # its p90 in every round it was timed in
        self._own: tuple[int, float] | None = None  # the point whose prefix is the recipe's own (ratio 1 by identity)
        self._identical: set[str] = set()  # artifacts being timed that are the recipe's own model (structurally)

    # ------------------------------------------------------------ scoring
    def _threads(self) -> int:
        return self.device.threads

    def latency(self, model: torch.nn.Module, work: Path, finalist: bool = False) -> Scored:
        return self.judge({"candidate": model}, work, finalist)["candidate"]

    def judge(self, models: dict[str, torch.nn.Module], work: Path, finalist: bool = False) -> dict[str, Scored]:
        """Each model's latency on the target's device: predicted from its kernels, or measured on this machine
        in rounds (``measured``; the models given together are timed interleaved, in the same rounds)."""
        t = self.target
        if self.pf is not None and self.rel is None and not (finalist and self.device.name == catalog.HOST):
            return {name: self._predicted(m, work / name, finalist) for name, m in models.items()}
        arts = []
        for name, m in models.items():
            (work / name).mkdir(parents=True)
            d = lower(clone_module(m), self.ctx.input_shape, t.format, t.precision, work / name / "art", name,
                      work / name, seed=self.recipe.seed)
            arts.append(RunArtifact(name, catalog.HOST, t.format, t.precision, d, [], _main(d)))
        return self.measured(arts)

    def _predicted(self, model: torch.nn.Module, work: Path, finalist: bool) -> Scored:
        t = self.target
        # a candidate's kernels are the same in every format: its ONNX FP32 file, the quickest to write, says
        # them (an INT8 file reads a ReLU6 as a rectified range, act 1, where this one reads act 2: the INT8
        # forests, fitted on acts 0 and 1, split between them, so 2 falls with 1); a finalist is read from its
        # own artifact
        fmt, precision = (t.format, t.precision) if finalist else ("onnx", "fp32")
        art = lower(clone_module(model), self.ctx.input_shape, fmt, precision, work / "art", "candidate", work,
                    seed=self.recipe.seed)
        ks, unmodelled = read(art / _main(art), fmt)
        if unmodelled:  # its error bound was measured without these: it cannot say what fits the budget
            raise EdgeshipError(f"search {self.spec.name}: the {self.device.name} latency predictor does not model "
                                f"{ops_text(unmodelled)} of this model, so its predictions cannot judge the budget",
                                f"search with measured latencies instead (a target on this machine, device: host), "
                                f"then profile the export on {self.device.name} "
                                f"(`edgeship profile RUN --ssh USER@HOST --device {self.device.name}`)")
        m = predictors.predict_kernels(self.pf, ks, t.format, t.precision, self._threads())
        assert m.prediction is not None
        if m.prediction.unvalidated:  # a 1-D model on an error measured on too few 1-D architectures
            raise EdgeshipError(f"search {self.spec.name}: the {self.device.name} latency predictor's error does not "
                                f"hold for this model: {m.prediction.unvalidated}",
                                f"calibrate it again (`edgeship profile RUN --calibrate --device "
                                f"{self.device.name}`), or search with measured latencies (device: host)")
        return Scored(m.prediction.p90_upper_ms, m.p50_ms or 0.0, m.p90_ms or 0.0, "predicted",
                      f"predicted p90 {m.p90_ms:.4g} ms, upper bound {m.prediction.p90_upper_ms:.4g} ms")

    def measured(self, arts: list[RunArtifact]) -> dict[str, Scored]:
        """The artifacts timed here in ``timing.rounds`` rounds (interleaved, a fresh process each), each judged
        on the median of its rounds' p90s; one whose median lies within its spread of the budget (one timing
        could fall on either side) gets as many rounds again and is judged on the median of all."""
        tm = self.spec.timing
        self._timed += 1
        if self.rel is not None:
            return self._side_by_side(arts)
        got = measure_rounds(arts, self._threads(), tm.rounds, tm.runs, tm.warmup, seed=self._timed,
                             min_s=tm.min_round_s)
        near = [a for a in arts if self.budget is not None and near_budget(_p90s(got[a.name]), self.budget)]
        if near:
            more = measure_rounds(near, self._threads(), tm.rounds, tm.runs, tm.warmup, seed=-self._timed,
                                  min_s=tm.min_round_s)
            for a in near:
                got[a.name] += more[a.name]
        out = {}
        for a in arts:
            ms = got[a.name]
            r = rounds_timing(_p90s(ms), [m.p50_ms or 0.0 for m in ms], [m.runs for m in ms], tm.runs, a in near)
            out[a.name] = Scored(r.median_p90_ms, r.median_p50_ms, r.median_p90_ms, "measured",
                                 f"measured on this machine: {r.how}", r)
        return out

    def _side_by_side(self, arts: list[RunArtifact]) -> dict[str, Scored]:
        """latency_vs_recipe: the artifacts and the recipe's own model timed side by side (``measure_interleaved``:
        ``timing.rounds`` processes, blocks of ``block_runs`` runs in turn), each judged on the median over the
        processes of its p90 over the recipe's model's p90 in the same process; one whose median ratio lies within
        the ratios' spread of the budget (or whose p90 lies so near an absolute budget) gets as many processes
        again. The recipe's own point is that model: its ratio is 1 by identity, not by timing."""
        assert self._anchor is not None
        tm = self.spec.timing
        dirs = {ANCHOR: self._anchor, **{a.name: a.dir for a in arts}}
        blocks = -(-tm.runs // tm.block_runs)

        def timed(seed: int) -> dict[str, list[dict]]:
            return measure_interleaved(dirs, self._threads(), tm.rounds, tm.block_runs, blocks, tm.warmup, seed,
                                       tm.min_round_s)

        got = timed(self._timed)

        def ratios(name: str) -> list[float]:
            return [round(c["p90_ms"] / a["p90_ms"], 4) for c, a in zip(got[name], got[ANCHOR])]

        def near(a: RunArtifact) -> bool:
            if self.budget is not None and near_budget([r["p90_ms"] for r in got[a.name]], self.budget):
                return True
            return a.name not in self._identical and near_budget(ratios(a.name), self.rel or 1.0)

        again = [a for a in arts if near(a)]
        if again:
            more = timed(-self._timed)
            for name in got:
                got[name] += more[name]
        self._anchor_p90s += [round(r["p90_ms"], 4) for r in got[ANCHOR]]
        out = {}
        for a in arts:
            rs = got[a.name]
            r = rounds_timing([round(x["p90_ms"], 4) for x in rs], [x["p50_ms"] for x in rs],
                              [x.get("runs") for x in rs], tm.runs, False)
            r.remeasured = bool(again)
            r.vs_recipe_rounds = [1.0] * len(rs) if a.name in self._identical else ratios(a.name)
            r.vs_recipe = 1.0 if a.name in self._identical else round(statistics.median(r.vs_recipe_rounds), 4)
            r.how = (f"p90 {r.vs_recipe:.3f}x the recipe's own model's "
                     + ("(it is that model)" if a.name in self._identical else
                        f"(median over {len(rs)} processes timing both side by side in blocks of {tm.block_runs} "
                        f"runs, ratios {min(r.vs_recipe_rounds):.3f}-{max(r.vs_recipe_rounds):.3f})")
                     + f"; its own {r.how}")
            if again:
                r.how += ("; a model timed in these processes lay within the ratios' spread of the budget: as many "
                          "processes again were timed")
            out[a.name] = Scored(r.median_p90_ms, r.median_p50_ms, r.median_p90_ms, "measured",
                                 f"measured on this machine: {r.how}", r, r.vs_recipe)
        return out

    def within(self, s: Scored) -> bool:
        """Whether a latency meets the search's budgets: the absolute one and the one relative to the recipe."""
        return ((self.budget is None or s.latency_ms <= self.budget)
                and (self.rel is None or (s.vs_recipe is not None and s.vs_recipe <= self.rel)))

    def over(self, s: Scored) -> float:
        """How far over its budgets a latency is (<= 0: within), Optuna's constraint; relative excess."""
        out = []
        if self.budget is not None:
            out.append(s.latency_ms / self.budget - 1.0)
        if self.rel is not None:
            out.append((s.vs_recipe or 0.0) / self.rel - 1.0)
        return max(out)

    def budget_text(self) -> str:
        parts = [f"the {self.budget:g} ms budget"] if self.budget is not None else []
        if self.rel is not None:
            parts.append(f"{self.rel:g}x the recipe's own model's p90")
        return " and ".join(parts)

    def timing_text(self) -> str | None:
        """How the search's measured latencies were judged, for the record (None: all predicted)."""
        if self.pf is not None and self.device.name != catalog.HOST and self.rel is None:
            return None
        tm = self.spec.timing
        if self.rel is not None:
            return (f"each candidate, and the finalists together, timed on this machine side by side with the recipe's "
                    f"own model in {tm.rounds} fresh processes (blocks of {tm.block_runs} runs of each in turn, at "
                    f"least {tm.runs} runs and {tm.min_round_s:g} s of each per process); the relative budget is "
                    "judged on the median over the processes of the candidate's p90 over that model's p90 in the "
                    "same process, and one whose median lay within the ratios' spread of the budget was timed in as "
                    "many processes again")
        who = "the finalists" if self.pf is not None else "each candidate, and the finalists interleaved,"
        each = f"at least {tm.runs} runs and {tm.min_round_s:g} s" if tm.min_round_s else f"{tm.runs} runs"
        return (f"{who} timed on this machine in {tm.rounds} rounds of {each} after {tm.warmup} warm-up "
                "(a fresh process per round); the budget is judged "
                "on the median of the rounds' p90s; one whose median lay within the rounds' spread (highest - "
                "lowest p90) of the budget was timed "
                f"{tm.rounds} rounds more and judged on the median of all")

    def candidate(self, base: torch.nn.Module, blocks: int, ratio: float) -> tuple[SearchCandidate, torch.nn.Module]:
        prefix = variant_passes(self.passes, blocks, ratio, prefix_only=True)
        result = run_passes(base, prefix, self.ctx, self.cache, self.data_spec)
        model = result.model
        top1 = result.stages[-1].top1_val if result.stages else _val_top1(model, self.ctx)
        stats = model_stats(model, self.ctx.input_shape)
        self._identical = {"candidate"} if (blocks, ratio) == self._own else set()
        with tempfile.TemporaryDirectory(prefix="edgeship-search-") as tmp:
            s = self.latency(model, Path(tmp))
        c = SearchCandidate(blocks=blocks, macs_ratio=ratio, top1_val=top1, params=stats["params"],
                            macs=stats["macs"], latency_ms=round(s.latency_ms, 4), p50_ms=round(s.p50_ms, 4),
                            p90_ms=round(s.p90_ms, 4), latency_source=s.source, timing=s.timing, note=s.note,
                            vs_recipe=s.vs_recipe)
        c.feasible = bool(self.within(s) and (top1 or 0.0) >= self.floor)
        return c, model

    # ------------------------------------------------------------ the search
    def run(self, base: torch.nn.Module) -> tuple[list[tuple[str, PassConfig]] | None, SearchRecord]:
        """(the winner's whole pipeline, the search's record); no pipeline when nothing met the budget."""
        import optuna  # heavy: only a recipe with search: needs it

        optuna.logging.set_verbosity(logging.WARNING)
        t0 = time.perf_counter()
        spec = self.spec
        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(4, spec.trials))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        dist = {"blocks": optuna.distributions.CategoricalDistribution(spec.space.blocks),
                "macs_ratio": optuna.distributions.CategoricalDistribution(spec.space.macs_ratio)}
        seen: dict[tuple[int, float], SearchCandidate] = {}
        models: dict[tuple[int, float], torch.nn.Module] = {}
        size = len(spec.space.blocks) * len(spec.space.macs_ratio)
        own = recipe_point(self.passes)
        anchor_tmp = self._make_anchor(base, own) if self.rel is not None else None
        if own in {(b, r) for b in spec.space.blocks for r in spec.space.macs_ratio}:
            # the recipe's own depth and width come first: a search that never tried the hand-written model could
            # not say whether it beat it (5 TPE trials of 9 points missed it in search.json's first full run)
            study.enqueue_trial({"blocks": own[0], "macs_ratio": own[1]})
            info(f"search {spec.name}: the recipe's own point (drop {own[0]} blocks, keep {own[1]:g} of MACs) "
                 "is the first candidate")
        for _ in range(spec.trials * 3):  # TPE repeats itself in a small space: repeats cost nothing
            if len(seen) >= min(spec.trials, size):
                break
            trial = study.ask(dist)
            key = (int(trial.params["blocks"]), float(trial.params["macs_ratio"]))
            if key not in seen:
                info(f"search {spec.name}: candidate {len(seen) + 1}: drop {key[0]} blocks, keep {key[1]:g} of MACs")
                try:
                    seen[key], models[key] = self.candidate(base, *key)
                except EdgeshipError as e:  # a pass refuses this point (a ratio that empties a layer): out
                    seen[key] = SearchCandidate(blocks=key[0], macs_ratio=key[1], params=0, latency_ms=0.0,
                                                latency_source=REFUSED, note=str(e))
                c = seen[key]
                if c.latency_source == REFUSED:
                    info(f"search {spec.name}: refused - out ({c.note})")
                else:
                    info(f"search {spec.name}: val top-1 {c.top1_val or 0:.4f}, latency {c.latency_ms:.4g} ms "
                         f"({c.timing.how if c.timing else c.latency_source}; budget: {self.budget_text()})"
                         f"{'' if c.feasible else ' - out'}")
            c = seen[key]
            refused = c.latency_source == REFUSED
            scored = Scored(c.latency_ms, c.p50_ms or 0.0, c.p90_ms or 0.0, c.latency_source, "", None, c.vs_recipe)
            trial.set_constraint("latency", 1.0 if refused else self.over(scored))  # <= 0: feasible
            trial.set_constraint("accuracy", 1.0 if refused else self.floor - (c.top1_val or 0.0))
            study.tell(trial, c.top1_val or 0.0)
        try:
            winner, why = self.finals(base, seen, models)
        finally:
            if anchor_tmp is not None:
                anchor_tmp.cleanup()
        anchor_ms = round(statistics.median(self._anchor_p90s), 4) if self._anchor_p90s else None
        budget = self.budget  # with latency_vs_recipe: the tighter of the two in ms (what the Pareto plot draws)
        if self.rel is not None and anchor_ms is not None:
            budget = min(budget if budget is not None else float("inf"), round(self.rel * anchor_ms, 4))
        record = SearchRecord(name=spec.name, targets=list(spec.targets), device=self.device.name,
                              budget_ms=budget or 0.0, min_top1=self.floor, trials=len(seen),
                              latency_vs_recipe=self.rel, recipe_model_p90_ms=anchor_ms,
                              candidates=list(seen.values()), winner=winner, why=why,
                              wall_s=round(time.perf_counter() - t0, 1), timing=self.timing_text())
        if winner is None:
            return None, record
        w = record.candidates[winner]
        passes = variant_passes(self.passes, w.blocks, w.macs_ratio)
        record.passes = [{"name": n, **cfg.model_dump(mode="json")} for n, cfg in passes]
        return passes, record

    def _make_anchor(self, base: torch.nn.Module, own: tuple[int, float]) -> tempfile.TemporaryDirectory:
        """latency_vs_recipe: the recipe's own model (its passes up to its last drop_blocks or prune, from the
        stage cache) lowered for the searched target, in a directory that lives as long as the search."""
        names = [n for n, _ in self.passes]
        last = max((i for i, n in enumerate(names) if n in PREFIX), default=-1)
        prefix = self.passes[:last + 1]
        if _dump(variant_passes(self.passes, *own, prefix_only=True)) == _dump(prefix):
            self._own = own
        model = run_passes(base, prefix, self.ctx, self.cache, self.data_spec).model if prefix else base
        tmp = tempfile.TemporaryDirectory(prefix="edgeship-search-anchor-")
        t = self.target
        self._anchor = lower(clone_module(model), self.ctx.input_shape, t.format, t.precision, Path(tmp.name) / "art",
                             ANCHOR, Path(tmp.name), seed=self.recipe.seed)
        info(f"search {self.spec.name}: every candidate is timed beside the recipe's own model "
             f"({', '.join(n for n, _ in prefix) or 'no compression'}) and must stay within {self.rel:g}x its p90")
        return tmp

    def finals(self, base: torch.nn.Module, seen: dict[tuple[int, float], SearchCandidate],
               models: dict[tuple[int, float], torch.nn.Module]) -> tuple[int | None, str]:
        keys = list(seen)
        feasible = sorted((k for k in keys if seen[k].feasible), key=lambda k: -(seen[k].top1_val or 0.0))
        if not feasible:
            made = [k for k in keys if seen[k].latency_source != REFUSED]
            if not made:
                return None, f"a pass refused all {len(keys)} candidates ({seen[keys[0]].note})"
            fastest = min(made, key=lambda k: seen[k].latency_ms)
            f = seen[fastest]
            rel = f", {f.vs_recipe:.3f}x the recipe's model" if f.vs_recipe is not None else ""
            return None, (f"none of {len(keys)} candidates met {self.budget_text()} and the top-1 floor "
                          f"{self.floor:g} (fastest: {f.latency_ms:.4g} ms{rel} at top-1 {f.top1_val or 0:.4f})")
        distill = next((cfg for n, cfg in self.passes if n == "distill"), None)
        finalists = feasible[:self.spec.finalists]
        tuned: dict[str, torch.nn.Module] = {}
        for k in finalists:
            c = seen[k]
            c.finalist = True
            model = models[k]
            if distill is not None:
                brief = distill.model_copy(update={"epochs": self.spec.finalist_epochs,
                                                   "samples": self.spec.finalist_samples})
                res = run_passes(model, [("distill", brief)], self.ctx, self.cache, self.data_spec)
                model, c.finetuned_top1_val = res.model, res.stages[-1].top1_val
            else:
                c.finetuned_top1_val = c.top1_val
            tuned[_label(k)] = model
        self._identical = {_label(k) for k in finalists if k == self._own}
        with tempfile.TemporaryDirectory(prefix="edgeship-final-") as tmp:  # timed together: the same load
            scored = self.judge(tuned, Path(tmp), finalist=True)
        best, best_key = None, None
        for k in finalists:
            c, s = seen[k], scored[_label(k)]
            c.final_latency_ms, c.final_source, c.final_timing = round(s.latency_ms, 4), s.source, s.timing
            ok = self.within(s)
            info(f"search {self.spec.name}: finalist drop {k[0]}, keep {k[1]:g}: top-1 after a brief fine-tune "
                 f"{c.finetuned_top1_val or 0:.4f}, {s.note}{'' if ok else ' - over the budget'}")
            if ok and (best is None or (c.finetuned_top1_val or 0) > (best.finetuned_top1_val or 0)):
                best, best_key = c, k
        if best is None or best_key is None:
            return None, (f"every finalist was over {self.budget_text()} when lowered to "
                          f"{self.target.format} {self.target.precision} ("
                          + "; ".join(f"{seen[k].final_latency_ms:.4g} ms, {scored[_label(k)].note}"
                                      for k in finalists) + ")")
        best.winner = True
        index = keys.index(best_key)
        others = [seen[k] for k in feasible[:self.spec.finalists] if k != best_key]
        why = (f"the most accurate of {len(feasible)} candidates within {self.budget_text()} and the top-1 "
               f"floor {self.floor:g} after a brief fine-tune ({best.finetuned_top1_val or 0:.4f}"
               + (", against " + ", ".join(f"{o.finetuned_top1_val or 0:.4f}" for o in others) if others else "")
               + f"); its latency: {best.final_latency_ms:.4g} ms {best.final_source}"
               + (f" ({best.final_timing.how})" if best.final_timing else ""))
        return index, why


def preflight(spec: SearchSpec, recipe: Recipe):
    """(target, device, latency budget, accuracy floor, predictor file or None) of a search; what it lacks is bad
    input, said before any work."""
    if recipe.input is None:
        raise EdgeshipError(f"search {spec.name}: a search varies drop_blocks and prune, which need an image "
                            "classifier (a recipe with input:)", "remove search: from this io: recipe")
    target = next(t for t in recipe.targets if t.name == spec.targets[0])
    device = catalog.get(target.device)
    limits = [target.budgets, recipe.budgets, device.budgets]
    budget = next((b.latency_ms_p90 for b in limits if b is not None and b.latency_ms_p90 is not None), None)
    if budget is None and spec.latency_vs_recipe is None:
        raise EdgeshipError(f"search {spec.name}: target {target.name} has no latency budget to search for",
                            "set budgets.latency_ms_p90 on the target, the recipe or its device, or the search's "
                            "latency_vs_recipe")
    if spec.latency_vs_recipe is not None and device.name != catalog.HOST:
        raise EdgeshipError(f"search {spec.name}: latency_vs_recipe is judged by timing candidates beside the "
                            f"recipe's own model on this machine, and target {target.name} runs on {device.name}",
                            "give that target an absolute budgets.latency_ms_p90, or search for a target on "
                            "this machine (device: host)")
    floor = spec.min_top1 if spec.min_top1 is not None else next(
        (b.min_top1 for b in limits if b is not None and b.min_top1 is not None), 0.0)
    pf = predictors.load(device.name)
    if pf is None and device.name != catalog.HOST:
        raise EdgeshipError(f"search {spec.name}: {device.name} has no latency predictor to score candidates with",
                            f"calibrate it: `edgeship profile RUN --calibrate --device {device.name} --ssh USER@HOST`, "
                            "or search for a target on this machine (measured)")
    return target, device, None if budget is None else float(budget), float(floor), pf


def near_budget(p90s: list[float], budget: float) -> bool:
    """Whether the rounds cannot tell the budget apart: their median lies within their spread (highest - lowest
    p90) of it, so one more timing could fall on either side."""
    return abs(statistics.median(p90s) - budget) <= max(p90s) - min(p90s)


def rounds_timing(p90: list[float], p50s: list[float], runs_done: list[int | None], runs: int,
                  remeasured: bool) -> LatencyRounds:
    """The record of a latency timed in rounds (``measure_rounds`` or ``measure_interleaved``): each round's p90
    and p50, their medians, the spread, and in words what the judged number is."""
    p50 = [round(x, 4) for x in p50s]
    lo, hi = min(p90), max(p90)
    done = sorted({n for n in runs_done if n}) or [runs]
    each = f"{done[0]} runs" if len(done) == 1 else f"{done[0]}-{done[-1]} runs"
    how = (f"median of {len(p90)} rounds of p90 ({each} each, a fresh process per round), spread "
           f"{lo:.4g}-{hi:.4g} ms")
    if remeasured:
        how += "; the first rounds' median lay within their spread of the budget: as many rounds again were timed"
    return LatencyRounds(p90_rounds_ms=p90, p50_rounds_ms=p50,
                         median_p90_ms=round(statistics.median(p90), 4),
                         median_p50_ms=round(statistics.median(p50), 4), spread_ms=[round(lo, 4), round(hi, 4)],
                         runs=runs, remeasured=remeasured, how=how)


def _p90s(ms: list[Measurement]) -> list[float]:
    """Each round's p90 as recorded (0.1 us): what the judgement and the record both use."""
    return [round(m.p90_ms or 0.0, 4) for m in ms]


def _dump(passes: list[tuple[str, PassConfig]]) -> list:
    return [(n, cfg.model_dump(mode="json")) for n, cfg in passes]


def _label(key: tuple[int, float]) -> str:
    """A finalist's artifact name: drop-4-keep-500 (blocks dropped, thousandths of the MACs kept)."""
    return f"drop-{key[0]}-keep-{round(key[1] * 1000)}"


def _main(art_dir: Path) -> str:
    return json.loads((art_dir / "model.json").read_text())["main"]


def _val_top1(model: torch.nn.Module, ctx: PassContext) -> float:
    return evaluate(model, ctx.data["val"])
