"""The shape of the code: no import cycles, no file created at import, the CLI imported only by the CLI,
no module over 350 lines, and docs/architecture.md's file table held against the files on disk."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("kdq", "jobs")
MAX_LINES = 350
MAX_FUNCTION_LINES = 80  # a function read in one sitting, as the training loop is
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def python_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = [module_name(p) for p in python_files()]

# Run in a fresh interpreter. It learns which third-party modules kdq imports (in a throwaway child),
# imports those itself so that each child below pays only for kdq's own code, then forks one child per
# module: each child starts with no kdq or jobs module loaded, imports its one module, and reports.
# A child that fails to import (a cycle met from that side) or leaves a file behind is a finding.
DRIVER = textwrap.dedent(
    """
    import importlib, json, os, shutil, sys

    modules, order = json.loads(sys.argv[1]), sys.argv[2]
    watched = [os.environ["KDQ_HOME"], os.getcwd()]

    def listing():
        return sorted(os.path.join(d, f) for top in watched for d, _, fs in os.walk(top) for f in fs + [""])

    def ours(name):
        return name.split(".")[0] in ("kdq", "jobs")

    def in_child(body):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                out = body()
            except BaseException as exc:
                out = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.waitpid(pid, 0)
        return json.loads(data or b'{"error": "the child died"}')

    def import_all():
        for m in modules:
            importlib.import_module(m)
        return {"third_party": sorted({n.split(".")[0] for n in sys.modules if not ours(n)})}

    before = listing()
    found = in_child(import_all)
    for name in found.get("third_party", []):
        try:
            importlib.import_module(name)
        except Exception:
            pass
    assert not any(ours(n) for n in sys.modules), "the driver must not hold a kdq module"
    created_by_all = sorted(set(listing()) - set(before))

    def empty_again():  # each child starts from the empty folders
        for top in watched:
            shutil.rmtree(top)
            os.mkdir(top)
        os.chdir(watched[1])

    empty_again()
    base = listing()
    results = {"all-at-once": found.get("error"), "created": {}}
    if order == "each":
        for m in modules:
            def one(m=m):
                importlib.import_module(m)
                return {"created": sorted(set(listing()) - set(base))}
            res = in_child(one)
            empty_again()
            results[m] = res.get("error")
            if res.get("created"):
                results["created"][m] = res["created"]
    results["created"]["(all)"] = created_by_all
    print(json.dumps(results))
    """
)


def run_driver(tmp_path: Path, modules: list[str], order: str) -> dict:
    import json

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDQ_")}
    env.update(KDQ_HOME=str(home), PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(modules), order],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_imports_alone_and_creates_no_file(tmp_path):
    results = run_driver(tmp_path, MODULES, "each")
    created = {m: files for m, files in results.pop("created").items() if files}
    failed = {m: e for m, e in results.items() if e}  # "all-at-once": every module, in sorted order
    assert not failed, f"modules that do not import in a fresh interpreter: {failed}"
    assert not created, f"importing these created files: {created}"


def test_all_modules_import_together_in_reverse_order(tmp_path):
    # The test above imports them all in sorted order first; a cycle may show only from the other end.
    results = run_driver(tmp_path, MODULES[::-1], "together")
    assert results["all-at-once"] is None, results["all-at-once"]
    assert not results["created"]["(all)"], results["created"]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_only_the_cli_imports_the_cli():
    offenders = [
        str(p.relative_to(ROOT))
        for p in python_files()
        if not module_name(p).startswith("kdq.cli")
        and any(n == "kdq.cli" or n.startswith("kdq.cli.") for n in imported_modules(p))
    ]
    assert not offenders, f"library modules that import kdq.cli: {offenders}"


def test_no_python_file_is_over_the_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in python_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_no_function_is_over_the_limit():
    long = {
        f"{p.relative_to(ROOT)}:{node.name}": n
        for p in python_files()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES
    }
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def listed_files(text: str) -> set[str]:
    """Every `path.py` named in the file table (the section headed 'Every file')."""
    table = text.split("## Every file", 1)[-1] if "## Every file" in text else ""
    return set(re.findall(r"`((?:kdq|jobs)/[\w/]+\.py)`", table))


def test_the_architecture_file_table_matches_the_files_on_disk():
    text = ARCHITECTURE.read_text()
    assert "## Every file" in text, "docs/architecture.md needs a section '## Every file' with the file table"
    listed = listed_files(text)
    on_disk = {str(p.relative_to(ROOT)) for p in python_files()}
    missing, gone = sorted(on_disk - listed), sorted(listed - on_disk)
    assert not missing, f"docs/architecture.md does not list: {missing}"
    assert not gone, f"docs/architecture.md lists files that are gone: {gone}"


def test_the_walk_through_opens_at_most_twelve_files():
    text = ARCHITECTURE.read_text()
    walk = text.split("## Every file", 1)[0]
    opened = list(dict.fromkeys(re.findall(r"`((?:kdq|jobs)/[\w/]+\.py)`", walk)))
    assert opened, "docs/architecture.md should walk one experiment through the files it touches"
    assert len(opened) <= 12, f"the walk-through opens {len(opened)} files: {opened}"
    on_disk = {str(p.relative_to(ROOT)) for p in python_files()}
    assert set(opened) <= on_disk, f"the walk-through names files that are gone: {set(opened) - on_disk}"


def import_graph() -> dict[str, set[str]]:
    """Which of our modules each module imports, at its top or inside a function: a lazy import that
    closes a circle hides it from the import tests above, so it counts as an edge here."""
    known = set(MODULES)
    return {
        module_name(p): {n for n in imported_modules(p) if n in known} - {module_name(p)}
        for p in python_files()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_specs_and_searches_import_in_one_direction_lazy_imports_counted():
    # kdq.search.space (the [search] models, pure) <- kdq.spec <- kdq.search.spec <- kdq.search.study
    # <- kdq.specfile: no module below imports one above, not even inside a function.
    ours = ("kdq.spec", "kdq.specfile", "kdq.search")
    found = [
        c for c in circles(import_graph()) if any(m == p or m.startswith(f"{p}.") for m in c for p in ours)
    ]
    assert not found, f"import circles: {found}"


def test_the_backends_and_the_package_that_picks_one_import_in_one_direction():
    # kdq.backends.base (the shared types) <- local, modal <- kdq.backends (get_backend): a backend
    # never imports the package that chooses it, not even inside a function.
    found = [c for c in circles(import_graph()) if any(m.startswith("kdq.backends") for m in c)]
    assert not found, f"import circles: {found}"


def test_no_module_imports_one_that_imports_it_back_anywhere():
    # The two tests above name the layers most likely to close a circle; this one holds for all of kdq
    # and jobs, so a helper placed in the wrong module is caught wherever it is.
    found = circles(import_graph())
    assert not found, f"import circles: {found}"
