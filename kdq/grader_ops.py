"""The operators the grader's torch knows, and the check that a TorchScript file calls no other.

A TorchScript file stores the source of every function its ``forward`` reaches, printed from the torch
that wrote it (``code/**/*.py`` in the zip), and the loading torch compiles that source again: a call to
an operator the loading torch lacks fails the whole load ("Unknown builtin op"), even inside a branch
that never runs. So a file written by a new torch can be unloadable in the grader's older one.

    python -m kdq.grader_ops --from-torch     # in the grader's torch: writes kdq/data/grader_ops.json
    grader_ops.unknown_calls("model.pt")      # [] or ["torch._upsample_lanczos2d_aa(...) in code/...py:369"]

The list shipped in ``kdq/data/grader_ops.json`` was dumped from torch 2.4.1, the oldest torch the
course server may run (docs/training.md says why). The check reads the file's code with Python's
``ast`` and imports no torch: every ``torch.NAME(...)`` and ``ops.NS.NAME(...)`` call must name an
operator of the list and fit one of its signatures (positional count, keyword names).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import zipfile
from functools import cache
from pathlib import Path

LIST = Path(__file__).parent / "data" / "grader_ops.json"


def signature(schema) -> str:
    """One overload as text: argument names in order, ``*name`` keyword-only, ``name=`` defaulted,
    a trailing ``...`` when it takes any number more."""
    args = []
    for a in schema.arguments:
        args.append(("*" if a.kwarg_only else "") + a.name + ("=" if a.has_default_value() else ""))
    if str(schema).split("->")[0].rstrip().endswith("...)"):  # the schema object does not say it
        args.append("...")
    return " ".join(args)


def from_torch() -> dict:
    """The operator list of the torch this process runs."""
    import torch

    ops: dict[str, set[str]] = {}
    for schema in torch._C._jit_get_all_schemas():
        ops.setdefault(schema.name, set()).add(signature(schema))
    return {"torch": torch.__version__.split("+")[0], "ops": {k: sorted(v) for k, v in sorted(ops.items())}}


@cache
def shipped(path: Path = LIST) -> dict:
    """The shipped list: ``{"torch": version, "ops": {"aten::conv2d": [signature, ...]}}``."""
    return json.loads(Path(path).read_text())


def _fits(sig: str, positional: int, keywords: set[str]) -> bool:
    names = sig.split()
    vararg = names[-1:] == ["..."]
    names = names[:-1] if vararg else names
    pos = [n for n in names if not n.startswith("*")]
    if positional > len(pos) and not vararg:
        return False
    known = {n.lstrip("*").rstrip("=") for n in names}
    if not vararg and not keywords <= known:
        return False
    given = {n.rstrip("=") for n in pos[:positional]} | keywords
    return all(n.endswith("=") or n.lstrip("*") in given for n in names)


def _operator(func: ast.expr) -> str | None:
    """``torch.conv2d`` -> ``aten::conv2d``, ``ops.prim.RaiseException`` -> ``prim::RaiseException``."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    parts.append(func.id)
    parts.reverse()
    if parts[0] == "torch" and len(parts) == 2:
        return f"aten::{parts[1]}"
    if parts[0] == "ops" and len(parts) == 3:
        return f"{parts[1]}::{parts[2]}"
    return None


def calls(path: str | Path):
    """``(operator, positional count, keyword names, where)`` for every operator call in the file's code."""
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if "/code/" not in f"/{name}" or not name.endswith(".py"):
                continue
            tree = ast.parse(z.read(name).decode(), filename=name)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and (op := _operator(node.func)):
                    where = f"{name.split('/code/', 1)[-1]}:{node.lineno}"
                    yield op, len(node.args), {k.arg for k in node.keywords if k.arg}, where


def unknown_calls(path: str | Path, ops: dict | None = None) -> list[str]:
    """The calls of the file's code that the listed torch cannot compile (empty when it loads there)."""
    ops = (ops or shipped())["ops"]
    bad = []
    for op, positional, keywords, where in calls(path):
        sigs = ops.get(op) or (ops.get(f"prim::{op[6:]}") if op.startswith("aten::") else None)
        if not sigs:
            bad.append(f"{op} (no such operator) at {where}")
        elif not any(_fits(s, positional, keywords) for s in sigs):
            bad.append(f"{op} with {positional} positional and keywords {sorted(keywords)} at {where}")
    return sorted(set(bad))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdq.grader_ops", description=__doc__.splitlines()[0])
    parser.add_argument("--from-torch", action="store_true", help=f"write this torch's operators to {LIST}")
    parser.add_argument("--out", type=Path, default=LIST)
    parser.add_argument("files", nargs="*", type=Path, help="TorchScript files to check against the list")
    args = parser.parse_args(argv)
    if args.from_torch:
        listing = from_torch()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in listing["ops"].items()]
        args.out.write_text(f'{{"torch": "{listing["torch"]}", "ops": {{\n' + ",\n".join(lines) + "\n}}\n")
        print(f"{args.out}: {len(listing['ops'])} operators of torch {listing['torch']}")
    status = 0
    for path in args.files:
        bad = unknown_calls(path)
        verdict = f"calls what torch {shipped()['torch']} lacks: {'; '.join(bad)}" if bad else "ok"
        print(f"{path}: {verdict}")
        status |= bool(bad)
    return status


if __name__ == "__main__":
    sys.exit(main())
