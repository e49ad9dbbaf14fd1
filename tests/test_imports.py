"""The house's import rules, read from the code (no module is imported to check them):
no import cycle among smpc/, parties/ and launch/; smpc/ never imports the application
(launch/, parties/); every module that reaches CrypTen imports smpc.compat first; `import
smpc` only defines; one command table."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("smpc", "parties", "launch")
# below the patches: smpc.compat uses these itself, so they import crypten only inside
# functions that run after compat has patched it
BELOW_COMPAT = {"smpc.compat", "smpc.meter", "smpc.protocols.csprng"}


def _modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path] = MODULES) -> list[str]:
    """The full names an import statement reaches (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    return [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin for a in node.names]


def _own(name: str, modules: dict[str, Path] = MODULES) -> str | None:
    # the longest module of ours that `name` is or is inside
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_only(tree: ast.Module) -> set[int]:
    # imports under `if TYPE_CHECKING:` run for the type checker only
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped |= {id(n) for n in ast.walk(inner)}
    return skipped


def _graph(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_only(tree)
        targets = set()
        for node in ast.walk(tree):  # lazy imports inside functions count too
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
                for name in _imported(node, module, path.name == "__init__.py", modules):
                    own = _own(name, modules)
                    # a package's own __init__ runs before its modules: not an edge back
                    if own and own != module and not module.startswith(own + "."):
                        targets.add(own)
        graph[module] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return None


def test_no_import_cycle_and_the_library_never_imports_the_application():
    graph = _graph()
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
    upward = sorted(
        f"{m} -> {d}"
        for m, ds in graph.items()
        if m.startswith("smpc")
        for d in ds
        if d.split(".")[0] in ("launch", "parties")
    )
    assert not upward, f"smpc/ imports the application: {upward}"
    assert len(graph) > 70 and sum(map(len, graph.values())) > 250  # the walk saw the whole house


def test_the_walk_finds_a_cycle_through_a_lazy_relative_import(tmp_path):
    # the same walk on a made-up package: b imports a at its top, a imports b inside a
    # function and relatively; c only imports a (no cycle through it)
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n    return b\n")
    (package / "b.py").write_text("import pkg.a\n")
    (package / "c.py").write_text("from pkg import a\n")
    graph = _graph(_modules(tmp_path, ("pkg",)))
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert set(_cycle(graph) or []) == {"pkg.a", "pkg.b"}


# The runtime's layers, bottom up: the patches, the fixed-point helpers, the
# communicator, the protocols, then the session and the runtime. A module imports
# nothing of a layer above its own; the four lower layers import, besides lower layers,
# only leaves (modules that import nothing of smpc's: the meters, the errors, ...).
LAYERS = (
    {"smpc.compat"},
    {"smpc.fixed_point"},
    {"smpc.communicator", "smpc.transport", "smpc.wire"},
    {m for m in MODULES if m.startswith("smpc.protocols")},
    {"smpc.session", "smpc.runtime"},
)


def test_the_runtime_layers_import_one_way():
    graph = _graph()
    layer_of = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    leaves = {m for m, targets in graph.items() if not targets}
    wrong = []
    for module, layer in layer_of.items():
        for target in graph[module] - leaves:  # a leaf (the CSPRNG among the protocols) sits below all
            if target in layer_of:
                if layer_of[target] > layer:
                    wrong.append(f"{module} -> {target} (a layer above)")
            elif layer < len(LAYERS) - 1:
                wrong.append(f"{module} -> {target} (outside the layers, not a leaf)")
    assert not wrong, wrong
    assert {"smpc.meter", "smpc.errors", "smpc.protocols.csprng"} <= leaves


def test_every_module_that_uses_crypten_imports_compat_first():
    late = []
    for module, path in MODULES.items():
        if module in BELOW_COMPAT:
            continue
        tree = ast.parse(path.read_text(), str(path))
        uses = any(
            name.split(".")[0] == "crypten"
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for name in _imported(node, module, False)
        )
        if not uses:
            continue
        compat_at = crypten_at = None
        for index, node in enumerate(tree.body):  # top level, in order
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = _imported(node, module, path.name == "__init__.py")
                if compat_at is None and "smpc.compat" in names:
                    compat_at = index
                if crypten_at is None and any(n.split(".")[0] == "crypten" for n in names):
                    crypten_at = index
        if compat_at is None or (crypten_at is not None and crypten_at < compat_at):
            late.append(module)
    assert not late, f"these modules use crypten without importing smpc.compat first: {late}"


def test_import_smpc_only_defines():
    code = (
        "import sys, smpc\n"
        "print('crypten' in sys.modules, 'torch' in sys.modules)\n"
        "print(sorted(smpc.__all__))\n"
        "print(all(callable(getattr(smpc, name)) for name in smpc.__all__))\n"
        "print('crypten' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "False False"
    assert lines[1] == str(sorted(["Client", "Simulation", "SmpcError", "load_config", "pack", "simulate"]))
    assert lines[2] == "True"
    assert lines[3] == "True"  # the entry points do reach CrypTen, once asked for


def test_one_command_table_and_every_package_says_what_it_exports():
    mains = sorted(
        module
        for module, path in MODULES.items()
        if module != "launch.cli"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "main"
    )
    assert not mains, f"main() outside the command table (launch/cli.py): {mains}"
    for path in MODULES.values():
        if path.name == "__init__.py":
            tree = ast.parse(path.read_text())
            assigned = {
                t.id
                for node in tree.body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            }
            assert "__all__" in assigned, f"{path.relative_to(ROOT)}: no __all__"
    for name in ("convert", "ops", "execute", "model_dir", "cli"):
        assert not (ROOT / "smpc" / f"{name}.py").exists()


def test_the_package_ships_its_type_hints():
    # PEP 561: a checker uses smpc's hints only when the package says it has them
    assert (ROOT / "smpc" / "py.typed").is_file()
    assert 'smpc = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


def test_no_source_file_is_ignored_by_git():
    # a package whose name a .gitignore pattern matches (smpc/runs/ and `runs/`) would be
    # left out of every clone without a word
    ignored = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", *PACKAGES, "tests", "docs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert [f for f in ignored if "__pycache__" not in f and f.endswith((".py", ".md", ".typed"))] == []
