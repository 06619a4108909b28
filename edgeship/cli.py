"""The `edgeship` command line, a thin layer over the Python API (``edgeship.api``). Bad input: one line
naming the problem and the fix, exit code 2, no traceback unless --debug. A run where some target failed
exits 1. Start-up imports no torch and no converter: the commands that need them import them through the API."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeship import api
from edgeship.devices import budgets
from edgeship.devices.android import AdbTarget
from edgeship.devices.kernels import ops_text
from edgeship.devices.profile import ProfileResult
from edgeship.devices.remote import SshTarget
from edgeship.errors import EdgeshipError
from edgeship.limits import disk_full_error
from edgeship.pipeline import distributed
from edgeship.progress import set_quiet
from edgeship.recipe import json_schema as recipe_json_schema
from edgeship.recipe_template import write_template
from edgeship.record import RunRecord, Verdict
from edgeship.record import json_schema as record_json_schema
from edgeship.report.console import summary_tables

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress a trained PyTorch model and ship it to edge devices.")
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)
STATE = {"debug": False, "json": False, "quiet": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or info lines (CI)"),
         as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON on stdout")):
    STATE["debug"], STATE["json"], STATE["quiet"] = debug, as_json, quiet
    # torch 2.13 warns from inside its own pytree code whenever a .pt2 module is loaded or copied
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
    set_quiet(quiet or as_json)
    passive_openmp_when_busy()


def passive_openmp_when_busy() -> None:
    """torch's OpenMP threads spin while they wait for the next parallel region. On a machine busier than its
    cores (a shared box, a CI runner) a spinning thread takes the core its partner needs and every region waits
    for a descheduled thread: a fine-tuning step of the demo took 9 s instead of 0.8 s at load 13 on 2 cores
    (benchmarks/omp_wait.py). Unless the user set OMP_WAIT_POLICY, a busy machine gets PASSIVE (libgomp reads
    it when torch loads, which the commands do later); an idle one keeps the default."""
    if "OMP_WAIT_POLICY" in os.environ:
        return
    try:
        busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:
        return
    if busy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def fail(message: str, code: int) -> typer.Exit:
    """The one error line; a rank of a job `--nproc-per-node` started leaves it for the launcher to print once."""
    w = distributed.world()
    if distributed.launched():
        distributed.record_failure(message, code)
    else:
        err.print(f"[bold red]error:[/bold red] {f'rank {w.rank}: ' if w.size > 1 else ''}{escape(message)}",
                  highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except EdgeshipError as e:
            if STATE["debug"]:
                raise
            if not e.problem.startswith("disk full"):
                _disk_full(e)  # a library's wording of a failed write, wrapped in another message
            raise fail(str(e), e.exit_code) from None
        except distributed.Stopped:  # torchrun stopped this rank because another failed: that one says why
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished stages stay cached; rerun to resume")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except OSError as e:  # a path the user gave that cannot be read or written
            if STATE["debug"]:
                raise
            _disk_full(e)
            where = f" {e.filename}" if e.filename else ""
            raise fail(f"cannot access{where}: {e.strerror or e}. Fix: check the path and its permissions", 2) from None
        except Exception as e:  # anything else: one line, the traceback behind --debug
            if STATE["debug"]:
                raise
            if distributed.launched() and distributed.peer_lost(e):  # another node's rank failed: it says why
                raise fail(distributed.PEER_LOST, 1) from None
            _disk_full(e)
            text = " ".join(str(e).split())
            raise fail(f"{type(e).__name__}: {text[:400]}. Fix: rerun with --debug for the traceback (a model of "
                       "your own: check that it runs forward and backward in plain torch)", 1) from None
    return wrapper


def _disk_full(e: Exception) -> None:
    """A write that failed on a full disk or a file size limit, however a library worded it: one line, exit 2."""
    where = getattr(e, "filename", None)
    full = disk_full_error(e, where or "its output", Path(where).parent if where else Path.cwd())
    if full is not None:
        raise fail(str(full), 2) from None


def emit_json(obj) -> None:
    if isinstance(obj, (RunRecord, Verdict)):
        obj = obj.model_dump(mode="json")
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


NPROC = typer.Option(None, "--nproc-per-node", min=1, help="train on N processes of this machine (torchrun; "
                     "a GPU each when there are GPUs); rank 0 writes everything")
NNODES = typer.Option(1, "--nnodes", min=1, help="machines in the job (run the same command on each)")
NODE_RANK = typer.Option(0, "--node-rank", min=0, help="this machine's index, 0 = the one that writes the run")
MASTER_ADDR = typer.Option(None, "--master-addr", help="node 0's address (several machines)")
MASTER_PORT = typer.Option(None, "--master-port", help="node 0's port (default 29500)")
JOIN_TIMEOUT = typer.Option(None, "--join-timeout", min=1, help="seconds a node waits for the others to start "
                            "(several machines; default torchrun's 900)")


def maybe_launch(command: list[str], recipe: Path, nproc: int | None, nnodes: int, node_rank: int,
                 master_addr: str | None, master_port: int | None, join_timeout: int | None = None) -> bool:
    """With --nproc-per-node (or --nnodes > 1), outside a torchrun job: check the recipe here, once, then run
    ``edgeship <command>`` on every process through torch.distributed.run. False: run it in this process."""
    if (nproc is None and nnodes == 1) or distributed.world().size > 1:
        return False
    api.load_recipe(recipe)  # bad input: one line, before any process starts
    flags = [*(["--debug"] if STATE["debug"] else []), *(["--quiet"] if STATE["quiet"] or STATE["json"] else [])]
    distributed.launch([*flags, *command], nproc or 1, nnodes, node_rank, master_addr, master_port, join_timeout)
    return True


@app.command()
@handle_errors
def train(recipe: Path = typer.Argument(..., help="recipe YAML"),
          if_missing: bool = typer.Option(False, "--if-missing", help="do nothing when the checkpoint exists"),
          nproc_per_node: int | None = NPROC, nnodes: int = NNODES, node_rank: int = NODE_RANK,
          master_addr: str | None = MASTER_ADDR, master_port: int | None = MASTER_PORT,
          join_timeout: int | None = JOIN_TIMEOUT):
    """Train the recipe's model (zoo or factory) and save the checkpoint at model.weights."""
    command = ["train", str(recipe), *(["--if-missing"] if if_missing else [])]
    if maybe_launch(command, recipe, nproc_per_node, nnodes, node_rank, master_addr, master_port,
                    join_timeout):
        metrics = {"checkpoint": str(api.load_recipe(recipe).model.weights)}
    else:
        metrics = api.train(recipe, if_missing=if_missing)
    if STATE["json"] and not distributed.launched():
        emit_json(metrics)


@app.command()
@handle_errors
def export(recipe: Path = typer.Argument(..., help="recipe YAML"),
           target: list[str] | None = typer.Option(None, "--target", "-t", help="export only this target (repeatable)"),
           trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                             help="allow model files that need full unpickling (runs their code)"),
           no_measure: bool = typer.Option(False, "--no-measure", help="skip the host latency/RAM measurement"),
           runs: int = typer.Option(50, "--runs", min=1, help="timed runs per artifact in the host measurement"),
           nproc_per_node: int | None = NPROC, nnodes: int = NNODES, node_rank: int = NODE_RANK,
           master_addr: str | None = MASTER_ADDR, master_port: int | None = MASTER_PORT,
           join_timeout: int | None = JOIN_TIMEOUT):
    """Compress the model, lower it to every target, verify, measure on the host, check budgets: runs/<name>/.
    With --nproc-per-node N the training passes run on N processes (torch.distributed)."""
    command = ["export", str(recipe), *[a for t in target or [] for a in ("--target", t)], "--runs", str(runs),
               *(["--trust-pickle"] if trust_pickle else []), *(["--no-measure"] if no_measure else [])]
    if maybe_launch(command, recipe, nproc_per_node, nnodes, node_rank, master_addr, master_port,
                    join_timeout):
        if node_rank != 0:  # node 0 wrote the run
            out.print(f"node {node_rank}: done; node 0 wrote the run")
            return
        record = api.load_run(api.load_recipe(recipe).output)
    else:
        record = api.export(recipe, targets=target, trust_pickle=trust_pickle, measure=not no_measure, runs=runs)
    if record is None or distributed.launched():  # a rank of a job: the launcher (or rank 0) reports
        raise typer.Exit(0)
    if STATE["json"]:
        emit_json(record)
    else:
        for table in summary_tables(record):
            out.print(table)
        _print_verdict(record.budgets)
        out.print(f"run written to {record.recipe.output}/ (report.json, report.html)")
        failed = [t.name for t in record.targets if not t.ok]
        if failed:
            err.print(f"[bold red]{len(failed)} target(s) failed:[/bold red] {', '.join(failed)} "
                      "(see report.json for why)")
    raise typer.Exit(0 if record.ok else 1)


@app.command()
@handle_errors
def report(run: Path = typer.Argument(..., help="a run directory (runs/<name>), its report.json, or the run's name")):
    """Rebuild runs/<name>/report.html from its report.json and print the summary tables."""
    record = api.load_run(run)
    path = api.report_html(record)
    if STATE["json"]:  # the report itself, as export --json prints it, and where the page was written
        emit_json({**record.model_dump(mode="json"), "report_html": str(path)})
        return
    for table in summary_tables(record):
        out.print(table)
    _print_verdict(record.budgets)
    out.print(f"report written to {path}")


@app.command()
@handle_errors
def init(path: Path = typer.Argument(Path("recipe.yaml"), help="where to write the recipe"),
         data: str = typer.Option("image_folder", "--data", help="image_folder, npz or idx"),
         model: str = typer.Option("factory", "--model",
                                   help="factory (+ state_dict), torchscript, exported or onnx"),
         io: bool = typer.Option(False, "--io", help="an io: section (several inputs or outputs, 1-D, state, "
                                 "extra arguments) instead of input: (one image in, class logits out)"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")):
    """Write a commented recipe for your own model and data; edit the lines marked <-- EDIT."""
    written = write_template(path, data=data, model=model, force=force, io=io)
    if STATE["json"]:
        emit_json({"recipe": str(written)})
    else:
        out.print(f"wrote {written}: edit the lines marked <-- EDIT, then run `edgeship export {written}`")


def _print_verdict(verdict: Verdict | None) -> None:
    if not verdict:
        return
    out.print(budgets.table(verdict))
    (out if verdict.passed else err).print(("" if verdict.passed else "[bold red]") + budgets.summary_line(verdict)
                                           + ("" if verdict.passed else "[/bold red]"), highlight=False,
                                           soft_wrap=True)  # one line in a CI log


@app.command()
@handle_errors
def devices():
    """List the device catalog (and this machine, detected)."""
    profiles = api.devices()
    if STATE["json"]:
        emit_json([p.model_dump(mode="json") for p in profiles])
        return
    tb = Table(title="devices (edgeship --json devices for everything)")
    short = {"latency_ms_p90": "p90<={:g}ms", "peak_ram_mb": "RAM<={:g}MB", "model_size_kb": "size<={:g}KiB",
             "min_top1": "top1>={:g}", "max_accuracy_drop": "drop<={:g}pt"}
    for col in ("name", "connect", "cpu", "cores", "ISA features", "round_to auto", "RAM", "formats", "threads",
                "default budgets", "estimate x"):
        tb.add_column(col)
    for p in profiles:
        b = {k: v for k, v in p.budgets.model_dump().items() if v is not None}
        tb.add_row(p.name, p.connect, f"{p.cpu.arch}: {p.cpu.model}", str(p.cpu.cores), " ".join(p.cpu.features) or "-",
                   api.auto_round_to_text(p), f"{p.ram_mb / 1024:.0f} GiB" if p.ram_mb else "-",
                   " ".join(p.formats) or "-", str(p.threads),
                   " ".join(short[k].format(v) for k, v in b.items()) or "-",
                   " ".join(f"{k}:{v:g}" for k, v in p.estimate.factor.items()))
    out.print(tb)


# the ssh options of profile and provision
SSH_PORT = typer.Option(None, "--ssh-port", help="ssh port")
SSH_IDENTITY = typer.Option(None, "--ssh-identity", help="private key file")
SSH_CONFIG = typer.Option(None, "--ssh-config", help="ssh config file (ssh -F)")
SSH_OPTION = typer.Option(None, "--ssh-option", help="KEY=VALUE for ssh -o (repeatable)")
SSH_TIMEOUT = typer.Option(10, "--connect-timeout", help="ssh ConnectTimeout in seconds")


def _ssh_target(ssh: str, port: int | None, identity: Path | None, config: Path | None, options: list[str] | None,
                timeout: int, python: str | None) -> SshTarget:
    return SshTarget(ssh, port, str(identity) if identity else None, str(config) if config else None,
                     list(options or []), timeout, python)


@app.command()
@handle_errors
def profile(run: Path = typer.Argument(..., help="a run directory (runs/<name>)"),
            ssh: str | None = typer.Option(None, "--ssh", help="measure on user@host over ssh"),
            ssh_port: int | None = SSH_PORT, ssh_identity: Path | None = SSH_IDENTITY,
            ssh_config: Path | None = SSH_CONFIG, ssh_option: list[str] | None = SSH_OPTION,
            ssh_timeout: int = SSH_TIMEOUT,
            remote_python: str | None = typer.Option(None, "--remote-python", help="Python on the device (needs "
                                                     "numpy and the runtime package; default: the one `edgeship "
                                                     "provision` set up, else python3)"),
            adb: str | None = typer.Option(None, "--adb", help="measure .tflite on this Android device serial"),
            adb_path: str = typer.Option("adb", "--adb-path", help="the adb binary"),
            benchmark_binary: str = typer.Option("/data/local/tmp/benchmark_model", "--benchmark-binary",
                                                 help="TFLite benchmark_model's path on the device"),
            estimate: bool = typer.Option(False, "--estimate", help="no device: host latency x a fixed factor per "
                                          "device (source: estimate; no measured error, never judges a budget "
                                          "unless asked with check --source estimate)"),
            predict: bool = typer.Option(False, "--predict", help="no device at hand: predict its latency with its "
                                         "calibrated predictor (predictors/<device>.json), with its measured error"),
            calibrate: bool = typer.Option(False, "--calibrate", help="build the device's latency predictor on it "
                                           "(--ssh/--adb, or alone for this machine), then predict"),
            probes: int = typer.Option(400, "--probes", min=20, help="--calibrate: kernel probes to measure"),
            calibration_archs: int = typer.Option(20, "--calibration-archs", min=3, help="--calibrate: random "
                                                  "architectures to fit the kernel sum on, and as many to measure "
                                                  "the predictor's error on"),
            predictors: Path | None = typer.Option(None, "--predictors", help="directory of predictor files "
                                                   "(default: predictors/)"),
            device: str | None = typer.Option(None, "--device", help="device profile to use (default: each "
                                                 "target's device)"),
            target: list[str] | None = typer.Option(None, "--target", "-t", help="only this target (repeatable)"),
            runs: int = typer.Option(50, "--runs", min=1, help="timed runs per artifact"),
            warmup: int = typer.Option(5, "--warmup", min=0, help="untimed warm-up runs"),
            threads: int | None = typer.Option(None, "--threads", min=1, help="override the device profile's threads")):
    """Measure a run's artifacts on the host or a device (--ssh / --adb), predict a device's latency (--predict,
    --calibrate), or estimate it (--estimate). Over ssh the device's runtime also runs test samples (top-1,
    agreement with the host); an emulated device is recorded as `emulated`: that verification only, no latency."""
    ssh_t = None if ssh is None else _ssh_target(ssh, ssh_port, ssh_identity, ssh_config, ssh_option, ssh_timeout,
                                                 remote_python)
    adb_t = None if adb is None else AdbTarget(adb, adb_path, benchmark_binary)
    res = api.profile(run, targets=target, ssh=ssh_t, adb=adb_t, estimate=estimate, device=device, runs=runs,
                      warmup=warmup, threads=threads, predict=predict, calibrate=calibrate, probes=probes,
                      calibration_archs=calibration_archs, predictors=predictors)
    if STATE["json"]:
        emit_json({"source": res.source,
                   "measurements": {k: m.model_dump(mode="json") for k, m in res.measured.items()},
                   "errors": res.errors})
    else:
        out.print(_measurement_table(res))
        if res.source == "estimate":
            out.print("[bold yellow]ESTIMATES, not measurements[/bold yellow]: method in each entry's `method` "
                      "(report.json) and in README")
        if res.source == "emulated":
            out.print(f"[bold yellow]EMULATED device[/bold yellow]: {budgets.EMULATED_WARNING}")
        for name, m in res.measured.items():
            if m.prediction is not None:
                p = m.prediction
                out.print(f"[yellow]PREDICTED[/yellow] {name}: p50 {m.p50_ms:.4g} ms (upper bound "
                          f"{p.p50_upper_ms:.4g}), p90 {m.p90_ms:.4g} ms (upper bound {p.p90_upper_ms:.4g}); the "
                          f"predictor's error on {p.n_validation} unseen architectures: MAPE {p.mape_pct:.1f}%, "
                          f"{p.within_10pct:.0%} within +-10%", highlight=False)
                if p.unmodelled_ops or p.unvalidated:  # what report.json's `method` says: shown, not only stored
                    left = f"it LEAVES OUT {ops_text(p.unmodelled_ops)}" if p.unmodelled_ops else p.unvalidated
                    out.print(f"  [bold yellow]{name}: {left}[/bold yellow]: the stated error does not cover this "
                              "model, so no budget passes on this prediction", highlight=False)
    for e in res.errors.values():
        err.print(f"[bold red]error:[/bold red] {escape(e)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if res.errors else 0)


def _measurement_table(res: ProfileResult) -> Table:
    num = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    if res.source == "emulated":  # no timings: what the device's runtime computed on the test samples
        tb = Table(title=f"{res.run_dir}: the emulated device's runtimes on test samples (no latency)")
        for col in ("target", "runtime", "top-1", "agreement with host", "samples", "max |dlogit|", "device"):
            tb.add_column(col)
        for name, m in res.measured.items():
            v = m.verification
            tb.add_row(name, f"{m.runtime} {m.runtime_version}", num(v and v.top1, ".4f"),
                       num(v and v.agreement, ".4f"), num(v and v.n, "d"), num(v and v.max_abs_logit_diff, ".2g"),
                       f"{m.device} (emulated {m.facts.get('machine')})")
        return tb
    tb = Table(title=f"{res.run_dir}: latency (source: {res.source})")
    checked = any(m.verification for m in res.measured.values())
    for col in ("target", "p50 ms", "p90 ms", "p99 ms", "mean +- std ms", "load ms", "peak RAM MB", "size KiB",
                "threads", "runs", *(["top-1 / agreement on device"] if checked else []), "where"):
        tb.add_column(col)
    for name, m in res.measured.items():
        f = m.facts
        where = (m.remote or f.get("estimated_for") or f.get("predicted_for") or f.get("hostname") or f.get("model")
                 or "-")
        v = m.verification
        tb.add_row(name, num(m.p50_ms, ".4g"), num(m.p90_ms, ".4g"), num(m.p99_ms, ".4g"),
                   f"{num(m.mean_ms, '.4g')} +- {num(m.std_ms, '.2g')}", num(m.load_ms, ".4g"),
                   num(m.peak_rss_mb, ".0f"), "-" if m.size_bytes is None else f"{m.size_bytes / 1024:.1f}",
                   str(m.threads), num(m.runs, "d"),
                   *([f"{num(v.top1, '.4f')} / {num(v.agreement, '.4f')} (n={v.n})" if v else "-"] if checked else []),
                   str(where))
    return tb


@app.command()
@handle_errors
def provision(ssh: str = typer.Option(..., "--ssh", help="the device: user@host"),
              ssh_port: int | None = SSH_PORT, ssh_identity: Path | None = SSH_IDENTITY,
              ssh_config: Path | None = SSH_CONFIG, ssh_option: list[str] | None = SSH_OPTION,
              ssh_timeout: int = SSH_TIMEOUT,
              remote_python: str | None = typer.Option(None, "--remote-python", help="the device's Python that "
                                                       "makes the venv (default: python3)"),
              fmt: list[str] | None = typer.Option(None, "--format", help="a format whose runtime to install "
                                                   "(repeatable; default: onnx, openvino and tflite)"),
              package: list[str] | None = typer.Option(None, "--package", help="NAME==VERSION to install instead of "
                                                       "this machine's version, or an extra package (repeatable)"),
              wheels: Path | None = typer.Option(None, "--wheels", help="take the wheels from this directory, not "
                                                 "PyPI (an offline machine)")):
    """Set a device up for `profile --ssh`: numpy and the runtimes, at this machine's versions, from wheels
    fetched HERE for the device's CPU and Python, into ~/.edgeship/venv there (the device needs no network)."""
    target = _ssh_target(ssh, ssh_port, ssh_identity, ssh_config, ssh_option, ssh_timeout, remote_python)
    done = api.provision(target, formats=fmt, packages=package, wheels=wheels)
    if STATE["json"]:
        emit_json(dataclasses.asdict(done))
        return
    tb = Table(title=f"{done.where}: {done.python} ({done.platform})")
    for col in ("package", "version", "status"):
        tb.add_column(col)
    for name, version in done.packages.items():
        tb.add_row(name, version, "[green]installed now[/green]" if name in done.installed else "already there")
    out.print(tb)
    out.print(("installed " + ", ".join(done.installed) if done.installed else "already provisioned: nothing to do")
              + f"; `edgeship profile RUN --ssh {done.where.split()[0]} ...` uses {done.python} there")


@app.command()
@handle_errors
def check(run: Path = typer.Argument(..., help="a run directory (runs/<name>)"),
          source: str | None = typer.Option(None, "--source", help="auto (default: each target on its own device's "
                                               "numbers; unmeasured devices are UNVERIFIED), or host, device, "
                                               "estimate, emulated for every target (host numbers for a Pi only when "
                                               "asked; emulated never passes)"),
          junit: Path | None = typer.Option(None, "--junit", help="write a JUnit XML file (CI test report)"),
          markdown: Path | None = typer.Option(None, "--markdown", help="write a Markdown summary")):
    """Check every target's budgets; exit 1 when any fails or is unverified (the CI gate)."""
    verdict = api.check(run, source, junit=junit, markdown=markdown)
    if STATE["json"]:
        emit_json(verdict)
    else:
        _print_verdict(verdict)
    raise typer.Exit(0 if verdict.passed else 1)


@app.command()
@handle_errors
def schema(which: str = typer.Argument("report", help="report (the run record, report.json) or recipe")):
    """Print the JSON schema of report.json or of a recipe (docs/*.schema.json are these)."""
    schemas = {"report": record_json_schema, "recipe": recipe_json_schema}
    if which not in schemas:
        raise EdgeshipError(f"no schema named {which!r}", "use report or recipe")
    emit_json(schemas[which]())


if __name__ == "__main__":
    app()
