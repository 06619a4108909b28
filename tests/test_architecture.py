"""The structure docs/architecture.md describes, checked: every module sits in a layer and imports only its own
layer or lower ones (data flows recipe -> model -> passes -> backends -> measurements -> verdict -> report), there
is no import cycle, an import placed inside a function is there only to defer something heavy (torch, a converter,
matplotlib), modules stay small, the device runner agrees with the backends, and the commands that read runs
start without torch or a converter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "edgeship"

# lowest first; a module may import modules of its own layer or a lower one
LAYERS = [
    ["edgeship.version", "edgeship.errors", "edgeship.schema", "edgeship.progress", "edgeship.logs", "edgeship.perf",
     "edgeship.limits"],
    ["edgeship.calibration", "edgeship.calibration.preprocess", "edgeship.calibration.quant", "edgeship.recipe"],
    ["edgeship.record", "edgeship.rundir"],
    ["edgeship.models", "edgeship.calibration.datasets", "edgeship.calibration.io_data",
     "edgeship.calibration.readers", "edgeship.calibration.streaming"],
    ["edgeship.pipeline"],
    ["edgeship.targets"],
    ["edgeship.devices"],
    ["edgeship.report"],
    ["edgeship.run", "edgeship.lower", "edgeship.search", "edgeship.train", "edgeship.recipe_template"],
    ["edgeship.api"],
    ["edgeship.cli", "edgeship"],
]
HEAVY = {"torch", "torch_pruning", "tensorflow", "openvino", "nncf", "onnx", "onnxruntime", "onnxscript", "matplotlib",
         "ai_edge_litert", "tflite_runtime", "sklearn", "PIL", "flatbuffers"}
MAX_LINES = 550


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer(mod: str) -> int:
    best, depth = None, -1
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and n.count(".") > depth:
                best, depth = i, n.count(".")
    assert best is not None, f"{mod} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return best


def resolve(node: ast.AST, here: str) -> list[str]:
    """The edgeship modules an import statement loads."""
    out = []
    if isinstance(node, ast.Import):
        out = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
        base = node.module
        if node.level:
            pkg = here.split(".")[: -node.level] if not MODULES[here].name == "__init__.py" else here.split(".")
            base = ".".join(pkg + [node.module])
        out = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [m for m in out if m == "edgeship" or m.startswith("edgeship.")]


def imports(mod: str) -> list[tuple[str, bool, int]]:
    """(imported edgeship module or third-party top-level name, inside a function?, line)."""
    tree = ast.parse(MODULES[mod].read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.ImportFrom) and child.module == "__future__":
                    continue
                targets = resolve(child, mod)
                if not targets:  # third party: its top-level package
                    names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module or ""]
                    targets = [n.split(".")[0] for n in names]
                found.extend((t, in_function, child.lineno) for t in targets)
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue  # typing only
            visit(child, nested)

    visit(tree, False)
    return found


def heavy(mod: str, seen: frozenset = frozenset()) -> bool:
    """The module (or an edgeship module it imports at the top) imports a heavy package at its top."""
    for target, in_function, _ in imports(mod):
        if in_function:
            continue
        if target in HEAVY:
            return True
        if target in MODULES and target not in seen and heavy(target, seen | {mod}):
            return True
    return False


def test_every_module_imports_only_its_own_layer_or_lower():
    wrong = [f"{mod}:{line} imports {target} (layer {layer(target)} > {layer(mod)})"
             for mod in MODULES for target, _, line in imports(mod)
             if target in MODULES and mod != "edgeship" and layer(target) > layer(mod)]
    assert not wrong, "imports that reach back up the chain:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = {mod: {t for t, _, _ in imports(mod) if t in MODULES and t != mod and t != "edgeship"} for mod in MODULES}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package importing its own submodules (torch2tf/__init__ re-exporting) is not a cycle
            root = min(comp, key=len)
            if len(comp) > 1 and not all(c.startswith(root + ".") or c == root for c in comp):
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, f"import cycles: {cycles}"


def test_function_level_imports_only_defer_heavy_modules():
    """A deferred import of edgeship's own code must be there to keep torch or a converter out of start-up, not to
    dodge a cycle."""
    light = [f"{mod}:{line} imports {target} inside a function, but it is light (import it at the top)"
             for mod in MODULES for target, in_function, line in imports(mod)
             if in_function and target in MODULES and not heavy(target)]
    assert not light, "\n".join(light)


def test_modules_stay_small():
    big = {mod: n for mod, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"split these by responsibility: {big}"


def test_device_runner_matches_the_backends():
    """bench_runner.py runs on devices without edgeship and keeps its own table of runtimes and loaders: it must
    say what the backend classes say."""
    from edgeship.devices import bench_runner
    from edgeship.targets.base import formats

    declared = {fmt: cls for fmt, cls in formats().items() if cls.device_loader}  # the ones devices can run
    assert set(bench_runner.RUNTIMES) == set(declared) == set(bench_runner.LOADERS)
    assert set(declared) == {"onnx", "openvino", "tflite"}
    for fmt, backend in declared.items():
        assert [tuple(x) for x in bench_runner.RUNTIMES[fmt]] == [tuple(x) for x in backend.runtime_modules], fmt
        assert bench_runner.LOADERS[fmt].__name__ == backend.device_loader, fmt
    # every backend class of a format declares the same runtime facts
    from edgeship.targets.base import backends

    for (fmt, _), cls in backends().items():
        one = formats()[fmt]
        assert (cls.runtime_modules, cls.device_loader) == (one.runtime_modules, one.device_loader), cls


def test_device_runner_needs_nothing_but_the_standard_library_and_numpy():
    tree = ast.parse((PKG / "devices" / "bench_runner.py").read_text())
    top = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {t for t in top if t == "edgeship" or t in HEAVY - {"onnxruntime", "openvino", "ai_edge_litert",
                                                                     "tflite_runtime"}}, top


START_UP = """
import sys
from typer.testing import CliRunner
from edgeship.cli import app
runner = CliRunner()
for args in {commands!r}:
    res = runner.invoke(app, args)
    assert res.exit_code in (0, 1), (args, res.exit_code, res.output, res.stderr)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(",".join(loaded))
"""


def test_reading_commands_start_without_torch_or_a_converter(tmp_path):
    """`edgeship --help`, `devices`, `check` and `report` import no torch, TensorFlow, OpenVINO or ONNX Runtime
    (issue 14: every command imported torch, 8 s here). `report` renders plots, so matplotlib is allowed there."""
    from helpers import run_record

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    run_record(targets=[{"name": "t", "format": "onnx", "precision": "fp32", "status": "ok",
                         "size_bytes": 10}]).save(run)
    forbidden = sorted(HEAVY - {"matplotlib", "PIL"})
    for commands in ([["--help"]], [["devices"]], [["check", str(run)]], [["report", str(run)]]):
        code = START_UP.format(commands=commands, heavy=forbidden)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stdout.strip() == "", f"{commands} imported: {p.stdout.strip()}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_docstring_cites_files_outside_the_repository(name):
    text = MODULES[name].read_text()
    assert "../shared" not in text and "shared/spikes" not in text and "shared/seeds" not in text


DOC_EXAMPLES = """
import sys, re, json
import numpy as np, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
text = Path({doc!r}).read_text()
for tag in ("example-pass", "example-backend"):
    code = re.search(r"<!-- " + tag + r" -->\\s*```python\\n(.*?)```", text, re.S).group(1)
    exec(compile(code, tag, "exec"), {{"__name__": "edgeship_doc_" + tag.replace("-", "_")}})

from edgeship.pipeline.base import registry, validate_pass
from edgeship.targets.base import get_backend
from edgeship.errors import EdgeshipError
from edgeship.models.zoo import ZOO

# the pass: registered, its config strict, and it folds the batch norms of a real model without changing its outputs
name, config = validate_pass(0, {{"name": "fold_bn"}})
try:
    validate_pass(0, {{"name": "fold_bn", "bogus": 1}})
    raise SystemExit("fold_bn accepted an unknown key")
except EdgeshipError:
    pass
model = ZOO["resnet"](in_channels=1, num_classes=10, input_size=(8, 8), depth=8).eval()
x = torch.randn(4, 1, 8, 8)
out = registry()["fold_bn"]().run(model, config, None)
assert out.metrics["batch_norms_before"] > 0 and out.metrics["batch_norms_after"] == 0, out.metrics
torch.testing.assert_close(out.model(x), model(x), atol=1e-4, rtol=1e-4)

# the backend: registered, lowers, loads and agrees with torch
from helpers import digits_recipe_dict  # noqa
from edgeship.calibration.preprocess import Preprocessing
from edgeship.calibration.quant import QuantSettings
from edgeship.recipe import TargetSpec
from edgeship.targets.base import Artifact, LowerContext
tmp = Path({tmp!r})
ctx = LowerContext(target=TargetSpec(name="ts", format="torchscript"), input_shape=(1, 8, 8),
                   calib=x.numpy(), preprocessing=Preprocessing(), labels=tuple("abcdefghij"), quant=QuantSettings(),
                   log_path=tmp / "log", work_dir=tmp)
backend = get_backend("torchscript", "fp32")
art = backend.lower(model, ctx, tmp)
back = Artifact.from_sidecar(tmp / "model.json")
np.testing.assert_allclose(backend.load(back)(x.numpy())[0], model(x).detach().numpy(), atol=1e-5)
print("ok")
"""


def test_the_architecture_page_examples_register_and_run(tmp_path):
    """docs/architecture.md's new pass and new backend, exactly as printed: one module each is all it takes."""
    code = DOC_EXAMPLES.format(tests=str(REPO / "tests"), doc=str(REPO / "docs" / "architecture.md"), tmp=str(tmp_path))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]
