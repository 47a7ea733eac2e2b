"""No file outside ``pictag/heads/`` compares a head kind's name or keys a table by one: the
rest of pictag asks the kind (DESIGN.md, "A head kind is one module that owns its whole life")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pictag.heads import KINDS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pictag"


def _names_in(node: ast.AST) -> list[str]:
    """Kind names written as string constants in ``node`` or in a tuple/list/set literal."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [
        item.value
        for item in items
        if isinstance(item, ast.Constant) and isinstance(item.value, str) and item.value in KINDS
    ]


EXEMPT = "# not a head kind"  # marks a line whose string is another name, e.g. a demo task


def kind_branches(source: str) -> list[tuple[int, str]]:
    """(line, text) of each comparison with a kind name, and each dict keyed by one; lines
    marked with ``EXEMPT`` are left out."""
    exempt = {i for i, line in enumerate(source.splitlines(), 1) if EXEMPT in line}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            names = [n for part in (node.left, *node.comparators) for n in _names_in(part)]
            if names:
                found.append((node.lineno, f"compares with {names}"))
        elif isinstance(node, ast.Dict):
            keys = [n for key in node.keys if key is not None for n in _names_in(key)]
            if keys:
                found.append((node.lineno, f"a table keyed by {keys}"))
        elif isinstance(node, ast.MatchValue) and _names_in(node.value):
            found.append((node.lineno, f"matches {_names_in(node.value)}"))
    return [(line, what) for line, what in found if line not in exempt]


def test_the_checker_finds_each_form() -> None:
    source = (
        'if head.kind == "multiclass": pass\n'
        'ok = kind in ("multilabel", "x")\n'
        'TABLE = {"multilabel": "sigmoid"}\n'
        'match kind:\n    case "multiclass": pass\n'
        'HeadConfig(kind="multilabel")  # a value, not a branch\n'
        'if task == "multilabel": pass  # not a head kind: the demo task\n'
    )
    assert [line for line, _ in kind_branches(source)] == [1, 2, 3, 5]


def test_no_kind_name_branches_outside_heads() -> None:
    files = [p for p in PACKAGE.rglob("*.py") if "heads" not in p.relative_to(PACKAGE).parts]
    assert len(files) > 40  # the scan really covers the package
    offences = [
        f"{path.relative_to(PACKAGE)}:{line}: {what}"
        for path in files
        for line, what in kind_branches(path.read_text(encoding="utf-8"))
    ]
    assert offences == [], "ask the head kind instead:\n" + "\n".join(offences)


def test_the_web_page_does_not_branch_on_kind_names() -> None:
    # The page shows a head's kind as text, but decides what to draw from what the head sends
    # (boxes, a mask, thresholds), so a new kind needs no page change.
    page = (PACKAGE / "serving" / "page.html").read_text(encoding="utf-8")
    kinds = "|".join(KINDS)
    pattern = rf"""kind\s*[!=]==?\s*["'`]({kinds})|["'`]({kinds})["'`]\s*[!=]==?"""
    assert re.findall(pattern, page) == []
