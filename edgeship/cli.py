"""The `edgeship` command line. Bad input: one line naming the problem and the fix, exit code 2,
no traceback unless --debug. A run where some target failed exits 1."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from edgeship.errors import EdgeshipError
from edgeship.progress import set_quiet

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress a trained PyTorch model and ship it to edge devices.")
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)
STATE = {"debug": False, "json": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or info lines (CI)"),
         as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON on stdout")):
    STATE["debug"], STATE["json"] = debug, as_json
    set_quiet(quiet or as_json)


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except EdgeshipError as e:
            if STATE["debug"]:
                raise
            err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished stages stay cached; rerun to resume")
            raise typer.Exit(130) from None
    return wrapper


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
@handle_errors
def train(recipe: Path = typer.Argument(..., help="recipe YAML"),
          if_missing: bool = typer.Option(False, "--if-missing", help="do nothing when the checkpoint exists")):
    """Train the recipe's model (zoo or factory) and save the checkpoint at model.weights."""
    from edgeship.train import train as _train

    metrics = _train(recipe, if_missing=if_missing)
    if STATE["json"]:
        emit_json(metrics)


@app.command()
@handle_errors
def export(recipe: Path = typer.Argument(..., help="recipe YAML"),
           target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="export only this target (repeatable)"),
           trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                             help="allow model files that need full unpickling (runs their code)")):
    """Compress the model with the recipe's passes, lower it to every target, verify, write runs/<name>/."""
    from edgeship.report import summary_tables
    from edgeship.run import export as _export

    report, code = _export(recipe, only=target, trust_pickle=trust_pickle)
    if STATE["json"]:
        emit_json(report)
    else:
        for table in summary_tables(report):
            out.print(table)
        out.print(f"run written to {report['recipe']['output']}/ (report.json, report.html)")
        failed = [t["name"] for t in report["targets"] if t["status"] != "ok"]
        if failed:
            err.print(f"[bold red]{len(failed)} target(s) failed:[/bold red] {', '.join(failed)} "
                      "(see report.json for why)")
    raise typer.Exit(code)


@app.command()
@handle_errors
def report(run: Path = typer.Argument(..., help="a run directory (runs/<name>) or its report.json")):
    """Rebuild runs/<name>/report.html from its report.json and print the summary tables."""
    from edgeship.report import summary_tables
    from edgeship.report_html import load_report, write_report_html

    path = write_report_html(run)
    if STATE["json"]:
        emit_json({"report_html": str(path)})
        return
    for table in summary_tables(load_report(run)[1]):
        out.print(table)
    out.print(f"report written to {path}")


@app.command()
@handle_errors
def init(path: Path = typer.Argument(Path("recipe.yaml"), help="where to write the recipe"),
         data: str = typer.Option("image_folder", "--data", help="image_folder, npz or idx"),
         model: str = typer.Option("factory", "--model", help="factory (+ state_dict), torchscript or exported"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")):
    """Write a commented recipe for your own model and data; edit the lines marked <-- EDIT."""
    from edgeship.recipe_template import write_template

    written = write_template(path, data=data, model=model, force=force)
    if STATE["json"]:
        emit_json({"recipe": str(written)})
    else:
        out.print(f"wrote {written}: edit the lines marked <-- EDIT, then run `edgeship export {written}`")


if __name__ == "__main__":
    app()
