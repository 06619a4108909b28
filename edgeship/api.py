"""edgeship's Python API; the `edgeship` command is a thin layer over it.

    import edgeship

    run = edgeship.export("recipes/digits.yaml")         # a path, a dict or a Recipe -> the run record
    print(run.ok, [(t.name, t.verify.top1) for t in run.targets])
    verdict = edgeship.check(run, source="host")           # the budget verdict (CI gate), saved in the run
    run = edgeship.load_run("runs/digits")                 # a finished run, validated
    edgeship.profile(run, runs=20)                         # host latency of every artifact, stored in the run
    edgeship.report_html(run)                              # rebuild runs/digits/report.html
    edgeship.provision(SshTarget("pi@raspberrypi"))        # the runtimes on a Pi, from wheels fetched here

Every function raises ``edgeship.EdgeshipError`` (one line naming the problem and the fix) for bad
input; a target that fails to lower or verify is recorded in the run (``Target.status``), not raised.

This module imports only the light parts at start-up (schemas, the device catalog, budgets): torch and
the converters are imported by the functions that need them, so that `edgeship check`, `report` and
`devices` start in well under a second.
"""

from __future__ import annotations

from pathlib import Path

from edgeship import rundir
from edgeship.devices import budgets, catalog
from edgeship.devices.android import AdbTarget
from edgeship.devices.profile import ProfileResult
from edgeship.devices.profile import profile as run_profile
from edgeship.devices.provision import Provisioned
from edgeship.devices.provision import provision as run_provision
from edgeship.devices.remote import SshTarget
from edgeship.errors import EdgeshipError
from edgeship.limits import write_text
from edgeship.progress import info, warn
from edgeship.recipe import Recipe, RecipeSource, parse_recipe
from edgeship.record import RunRecord, Verdict
from edgeship.targets.base import formats as formats_of_backends
from edgeship.targets.base import get_backend

RunSource = str | Path | RunRecord


# ---------------------------------------------------------------- recipes
def load_recipe(recipe: RecipeSource) -> Recipe:
    """A recipe (YAML path, dict or Recipe) validated against its schema and every registry it names."""
    return _checked(recipe)[0]


def _checked(source: RecipeSource) -> tuple[Recipe, str, list]:
    """(recipe, where it came from, its passes' validated configs); the first problem as one line."""
    recipe, where = parse_recipe(source)
    # torch-heavy (the pass registry and the zoo import torch): only recipe-loading commands get here
    from edgeship.models.zoo import ZOO
    from edgeship.pipeline.base import planned_quant, validate_passes

    if recipe.model.zoo is not None and recipe.model.zoo not in ZOO:
        raise EdgeshipError(f"{where}: model.zoo: unknown zoo model {recipe.model.zoo!r}; allowed: "
                            f"{', '.join(sorted(ZOO))}", "see the reference models in README.md")
    pass_configs = validate_passes(recipe.passes)
    devices = catalog.names()
    for i, t in enumerate(recipe.targets):
        if t.device not in devices:
            raise EdgeshipError(f"{where}: targets.{i}.device: unknown device {t.device!r}; allowed: "
                                f"{', '.join(devices)}", "see `edgeship devices`")
        try:
            get_backend(t.format, t.precision)
        except EdgeshipError as e:
            raise EdgeshipError(f"{where}: targets.{i} ({t.name}): {e.problem}", e.fix) from None
    pass_configs = _resolve_round_to(pass_configs, recipe)
    quant = planned_quant(pass_configs, recipe.seed)
    for i, t in enumerate(recipe.targets):  # a calibration method the target's quantizer lacks
        backend = get_backend(t.format, t.precision)
        problem = backend.calibration_problem(t.precision, quant)
        if problem:
            raise EdgeshipError(f"{where}: targets.{i} ({t.name}): {problem}",
                                f"set the calibrate pass's method to one of {', '.join(backend.calibration_methods)}"
                                ", or drop the target")
    return recipe, where, pass_configs


def auto_round_to_text(device: catalog.DeviceProfile) -> str:
    """What ``round_to: auto`` gives a prune pass for ``device`` alone, in short (``edgeship devices``)."""
    tile = catalog.channel_tile(device)[0]
    return f"{catalog.DEFAULT_CHANNEL_TILE}, tile {tile}" if tile > catalog.DEFAULT_CHANNEL_TILE else str(tile)


def _auto_round_to(recipe: Recipe) -> tuple[int | None, str]:
    """What ``round_to: auto`` of a prune pass becomes: round_to 8 and the channel tile of the recipe's targets'
    devices where one has a tile wider than 8 (the largest when they differ: each tile is a multiple of the
    smaller ones, so no device then computes a partial tile), and the line that says why."""
    tiles = {d: catalog.channel_tile(catalog.get(d)) for d in dict.fromkeys(t.device for t in recipe.targets)}
    widest = max((t for t, _ in tiles.values()), default=catalog.DEFAULT_CHANNEL_TILE)
    tile = widest if widest > catalog.DEFAULT_CHANNEL_TILE else None
    what = (f"round_to {catalog.DEFAULT_CHANNEL_TILE}, tile {tile} (layers at least {tile} wide keep multiples of "
            f"{tile})" if tile else f"round_to {catalog.DEFAULT_CHANNEL_TILE}, no tile")
    return tile, f"prune: round_to auto -> {what}; {'; '.join(f'{d}: {t}, {w}' for d, (t, w) in tiles.items())}"


def _resolve_round_to(pass_configs: list, recipe: Recipe) -> list:
    auto = [i for i, (_, c) in enumerate(pass_configs) if getattr(c, "round_to", None) == "auto"]
    if not auto:
        return pass_configs
    update = {"round_to": catalog.DEFAULT_CHANNEL_TILE, "tile": _auto_round_to(recipe)[0]}
    return [(n, c.model_copy(update=update) if i in auto else c) for i, (n, c) in enumerate(pass_configs)]


# ---------------------------------------------------------------- the main job
def export(recipe: RecipeSource, *, targets: list[str] | None = None, trust_pickle: bool = False,
           measure: bool = True, runs: int = 50, quiet: bool = False) -> RunRecord | None:
    """Compress the recipe's model, lower it to every target (or only ``targets``), verify each artifact with
    its own runtime, measure latency and memory on this machine (unless ``measure=False``), check the budgets
    and write the run directory (the recipe's ``output``). Returns the run record; ``record.ok`` says whether
    every target succeeded, ``record.budgets`` holds the verdict. In a script run by torchrun every rank calls
    it: the training passes run on all of them, rank 0 writes the run and gets the record, the others None."""
    rec, where, pass_configs = _checked(recipe)
    from edgeship.run import export as run_export  # torch-heavy

    if not quiet and any(p.model_dump().get("round_to") == "auto" for p in rec.passes):
        info(_auto_round_to(rec)[1])

    return run_export(rec, where, pass_configs, only=targets, trust_pickle=trust_pickle, quiet=quiet,
                      measure=measure, measure_runs=runs)


def train(recipe: RecipeSource, *, if_missing: bool = False, quiet: bool = False) -> dict:
    """Train the recipe's zoo or factory model from scratch and save it at ``model.weights``; returns its metrics."""
    rec, where, _ = _checked(recipe)
    from edgeship.train import train as run_train  # torch-heavy

    return run_train(rec, where, if_missing=if_missing, quiet=quiet)


# ---------------------------------------------------------------- finished runs
def load_run(run: RunSource) -> RunRecord:
    """A run directory, its report.json or a run name under ./runs/ -> the validated run record. A run that an
    export killed mid-swap left beside its place is put back first."""
    if isinstance(run, RunRecord):
        return run
    if not Path(run).exists() and Path(run).parent.is_dir():
        rundir.recover(Path(run))
    return RunRecord.load(run)


def check(run: RunSource, source: str | None = None, *, junit: Path | None = None,
          markdown: Path | None = None, save: bool = True) -> Verdict:
    """The budget verdict of a run. Latency and RAM come from ``source``: ``auto`` (the default) judges each
    target on its own device's numbers (a device measurement; the host's only for a target whose device is
    this machine) and leaves the others ``unverified`` (not passed); ``host``, ``device`` or ``estimate`` use that
    source for every target, and say which devices host numbers or estimates stood in for. Saved into the run
    (``save``) and optionally written as a JUnit XML file and a Markdown summary for CI."""
    record = load_run(run)
    verdict = budgets.evaluate(record, source or budgets.default_source(record))
    record.budgets = verdict
    if save:
        record.save()
        _refresh(record)
    for path, text in ((junit, budgets.junit_xml(verdict) if junit else ""),
                       (markdown, budgets.markdown(verdict, record.recipe.name) if markdown else "")):
        if path is not None:  # an unwritable path raises OSError (the CLI names it)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_text(Path(path), text)
    return verdict


def profile(run: RunSource, *, targets: list[str] | None = None, ssh: SshTarget | None = None,
            adb: AdbTarget | None = None, estimate: bool = False, device: str | None = None, runs: int = 50,
            warmup: int = 5, threads: int | None = None, predict: bool = False, calibrate: bool = False,
            probes: int = 400, calibration_archs: int = 20, predictors: Path | None = None) -> ProfileResult:
    """Measure a run's artifacts on this machine (default), on a device over SSH (``ssh=SshTarget(...)``) or
    adb; predict a device's latency with its calibrated predictor (``predict=True``; ``calibrate=True`` first
    builds it on the device, over ``ssh``/``adb`` or here, into ``predictors/<device>.json``); or estimate it from
    the host measurement with a fixed factor (``estimate=True``). Results are stored in the run record, marked
    with their source, and its report.html is refreshed."""
    res = run_profile(load_run(run), targets, ssh=ssh, adb=adb, estimate=estimate, device=device, runs=runs,
                      warmup=warmup, threads=threads, predict=predict, calibrate=calibrate, probes=probes,
                      calibration_archs=calibration_archs, predictors_dir=predictors)
    _refresh(res.record)
    return res


def provision(ssh: SshTarget, *, formats: list[str] | None = None, packages: list[str] | None = None,
              wheels: Path | None = None) -> Provisioned:
    """Set a device up for ``profile(ssh=...)``: numpy and the runtimes of ``formats`` (default: every format with a
    device runtime) at this machine's versions, from wheels fetched here for the device's CPU and Python
    (``wheels``: a local directory instead of PyPI), into ~/.edgeship/venv there. Idempotent."""
    fmts = formats or [f for f, b in formats_of_backends().items() if b.device_loader]
    return run_provision(ssh, fmts, packages, wheels)


def report_html(run: RunSource) -> Path:
    """Rebuild a run's report.html from its record; returns the page's path. (Not ``report``: that name is the
    package of the views, ``edgeship.report``.)"""
    from edgeship.report.html import write_report_html  # matplotlib: only the page needs it

    return write_report_html(load_run(run))


def _refresh(record: RunRecord) -> None:
    """report.html is rendered from the record: keep it in step after the record changed. A page that cannot
    be rendered is a warning: the record, which counts, is saved already."""
    try:
        report_html(record)
    except Exception as e:  # the page is a view; the measurement in report.json is what counts
        warn(f"[yellow]report.html not refreshed ({type(e).__name__}: {e}); run `edgeship report`[/yellow]")


def devices() -> list[catalog.DeviceProfile]:
    """The device catalog, with this machine detected."""
    return catalog.catalog()
