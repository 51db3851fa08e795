"""The structure docs/architecture.md documents, checked on the source: who may import whom, no import cycle, no
function over a screen, cheap ``import vidtok``, and every module the page names exists.

Imports are read with ``ast`` (nothing is imported), including the ones inside function bodies: a lazy import is
still a dependency.

    docs/architecture.md "Who may import whom" ──► ALLOWED (package -> packages)
    vidtok/**/*.py ──ast──► module graph ──► package graph ──► checked against ALLOWED
                                 └──► cycles (Tarjan)
    vidtok/**/*.py ──ast──► function lengths ──► <= MAX_FUNCTION_LINES
"""

from __future__ import annotations

import ast
import itertools
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vidtok"
PAGE = ROOT / "docs" / "architecture.md"


def _page_table() -> dict[str, set[str]]:
    """The "Who may import whom" table of docs/architecture.md: package (first name under vidtok; ``vidtok`` =
    vidtok/__init__.py) -> the packages it may import. The page is the rule; this test holds the code to it."""
    section = PAGE.read_text().split("## Who may import whom", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines() if line[:1] == "|"]
    table: dict[str, set[str]] = {}
    everything = []
    for left, right in (r for r in rows[2:] if len(r) == 2):
        names = [re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cell)) for cell in (left, right)]
        for package in names[0]:
            package = "vidtok" if package == "vidtok/__init__.py" else package
            table[package] = set(names[1])
            if right == "everything":
                everything.append(package)
    for package in everything:
        table[package] = set(table) - {"_lazy"}
    return table


ALLOWED = _page_table()
# Single module -> module imports that cross the table, each with its reason (also stated on the page).
EXCEPTIONS: dict[tuple[str, str], str] = {
    # the demo is the whole pipeline in one command: train, classify, embed, then the review page
    ("vidtok.engine.demo", "vidtok.report"): "the demo ends with the review page",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _imports(path: Path) -> set[str]:
    """The vidtok modules (or ``module.name`` for ``from module import name``) ``path`` imports, anywhere in it."""
    name, is_pkg = _module_name(path), path.name == "__init__.py"
    out = set()
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = name.split(".")[: len(name.split(".")) - n.level + is_pkg]
                mod = ".".join(base + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            out |= {mod} | {f"{mod}.{a.name}" for a in n.names}
        elif isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
    return {m for m in out if m == "vidtok" or m.startswith("vidtok.")}


def _graph() -> dict[str, set[str]]:
    """Module -> the vidtok modules it imports (``from pkg import submodule`` counts as importing the submodule)."""
    raw = {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}
    known = set(raw)
    return {m: {d for d in deps if d in known and d != m and not m.startswith(d + ".")} for m, deps in raw.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vidtok"


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = itertools.count()

    def visit(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_page_table_is_read():
    assert ALLOWED["errors"] == set() and ALLOWED["io"] == {"errors"} and ALLOWED["vidtok"] == {"_lazy", "errors"}
    assert "models" in ALLOWED["engine"] and "engine" not in ALLOWED["models"] and "report" in ALLOWED["cli"]


def test_every_package_is_in_the_layer_table():
    packages = {_package(m) for m in _graph()}
    assert packages == set(ALLOWED), (packages - set(ALLOWED), set(ALLOWED) - packages)


def test_packages_import_only_the_layers_below_them():
    bad = []
    for module, deps in sorted(_graph().items()):
        src = _package(module)
        for dep in sorted(deps):
            dst = _package(dep)
            if dst == src or dst in ALLOWED[src]:
                continue
            if any(module == a and (dep == b or dep.startswith(b + ".")) for a, b in EXCEPTIONS):
                continue
            bad.append(f"{module} imports {dep} ({src} may import: {', '.join(sorted(ALLOWED[src])) or 'nothing'})")
    assert not bad, "\n".join(bad)


def test_the_layer_table_itself_has_no_cycle():
    assert not _cycles(ALLOWED)


def test_no_import_cycle_between_modules():
    cycles = [" <-> ".join(sorted(c)) for c in _cycles(_graph())]
    assert not cycles, "\n".join(cycles)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def test_import_vidtok_and_help_import_no_torch():
    code = (
        "import sys\n"
        "import vidtok\n"
        "from vidtok.cli import cli\n"
        "try:\n    cli(['--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'av', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


MAX_FUNCTION_LINES = 100  # about a screen


def _long_functions(paths: list[Path]) -> list[str]:
    """``path:line name (n lines)`` of every function (nested ones too) longer than :data:`MAX_FUNCTION_LINES`."""
    out = []
    for path in paths:
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for n in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = n.end_lineno - n.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{where}:{n.lineno} {n.name} ({lines} lines)")
    return out


def test_no_function_is_longer_than_a_screen():
    long = _long_functions(sorted(PKG.rglob("*.py")))
    assert not long, "\n".join(long)


def test_the_length_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    found = _long_functions([tmp_path / "m.py"])
    assert len(found) == 1 and "long (101 lines)" in found[0], found


def _defines(path: Path, name: str) -> bool:
    """Whether module ``path`` defines, imports or lazily exports (``_LAZY``) ``name`` at its top level."""
    for n in ast.parse(path.read_text()).body:
        lazy = isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict) and ast.unparse(n.targets[0]) == "_LAZY"
        if lazy and name in _lazy_names(n.value):
            return True
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == name:
            return True
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
        if isinstance(n, ast.ImportFrom | ast.Import) and any((a.asname or a.name) == name for a in n.names):
            return True
    return False


def _lazy_names(table: ast.Dict) -> set[str]:
    """The names of a ``_LAZY`` table: ``"name": "module"`` entries and ``**dict.fromkeys([names], "module")``."""
    names = set()
    for key, value in zip(table.keys, table.values, strict=True):
        if isinstance(key, ast.Constant):
            names.add(key.value)
        elif isinstance(value, ast.Call) and ast.unparse(value.func) == "dict.fromkeys":
            names |= {e.value for e in value.args[0].elts if isinstance(e, ast.Constant)}
    return names


def _resolves(dotted: str) -> bool:
    """``vidtok.a.b`` is a module or package, or ``vidtok.a.b.name`` a name defined at the top of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        mod = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if mod.is_file():
            rest = parts[cut:]
            return not rest or (len(rest) <= 2 and _defines(mod, rest[0]))
    return False


def _expand(path: str) -> list[str]:
    """``vidtok/io/backends/{pyav,decord}.py`` -> one path per alternative."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in _expand(path[: m.start()] + alt + path[m.end() :])]


def test_architecture_page_names_only_modules_that_exist():
    text = PAGE.read_text()
    paths = {p for raw in re.findall(r"vidtok/[\w/{},.]*\w", text) for p in _expand(raw)}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    dotted = set(re.findall(r"\bvidtok(?:\.\w+)+", text)) - {"vidtok.yaml"}
    unknown = sorted(d for d in dotted if not _resolves(d))
    assert paths and dotted
    assert not missing and not unknown, (missing, unknown)


def test_name_checks_reject_what_does_not_exist():
    assert (
        _resolves("vidtok.load_model")
        and _resolves("vidtok.io.video")
        and _resolves("vidtok.errors.format_error")
        and _resolves("vidtok.io")
    )
    assert not _resolves("vidtok.io.nothing_here") and not _resolves("vidtok.errors.no_such_function")
    assert _expand("vidtok/io/{a,b}.py") == ["vidtok/io/a.py", "vidtok/io/b.py"]
