# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every public function and method of plugins/module_utils carries type hints, on each argument and its return.

Public: a name without a leading underscore, plus ``__init__``; methods are judged by their own name, so those of
a private class count too. ``self``/``cls`` as the first argument of a method need none. Functions defined inside
functions are local, not public, and are not checked. The files are read with ``ast``, not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple, Union

ROOT = Path(__file__).resolve().parents[4]
MODULE_UTILS = ROOT / "plugins" / "module_utils"

_Function = Union[ast.FunctionDef, ast.AsyncFunctionDef]


def _is_public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


def _definitions(node: ast.AST, prefix: str = "", in_class: bool = False) -> Iterator[Tuple[str, _Function, bool]]:
    """``(qualified name, def, whether it takes self or cls first)`` of the module's and its classes' functions, at any depth of if/try."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            yield from _definitions(child, prefix + child.name + ".", in_class=True)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in child.decorator_list)
            yield prefix + child.name, child, in_class and not static
        elif not isinstance(child, ast.Lambda):
            yield from _definitions(child, prefix, in_class)


def _unannotated(function: _Function, bound: bool) -> List[str]:
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    missing = [a.arg for i, a in enumerate(positional) if a.annotation is None and not (bound and i == 0 and a.arg in ("self", "cls"))]
    missing += [a.arg for a in arguments.kwonlyargs if a.annotation is None]
    missing += ["*" + a.arg for a in (arguments.vararg,) if a is not None and a.annotation is None]
    missing += ["**" + a.arg for a in (arguments.kwarg,) if a is not None and a.annotation is None]
    if function.returns is None:
        missing.append("return")
    return missing


def missing_hints(source: str, filename: str = "<source>") -> List[str]:
    """``"<file>:<line> <name>: <what lacks a hint>"`` for each public function or method of ``source`` missing one."""
    problems = []
    for name, function, bound in _definitions(ast.parse(source, filename)):
        if not _is_public(function.name):
            continue
        missing = _unannotated(function, bound)
        if missing:
            problems.append("%s:%d %s: %s" % (filename, function.lineno, name, ", ".join(missing)))
    return problems


def _module_utils_files() -> List[str]:
    return sorted(path.relative_to(ROOT).as_posix() for path in MODULE_UTILS.rglob("*.py"))


def _problems(relative: str) -> List[str]:
    return missing_hints((ROOT / relative).read_text(encoding="utf-8"), relative)


def test_every_public_function_of_module_utils_has_type_hints():
    files = _module_utils_files()
    assert files
    problems = [problem for relative in files for problem in _problems(relative)]
    assert not problems, "public functions or methods without type hints:\n" + "\n".join(problems)


def test_the_check_sees_what_lacks_a_hint():
    source = (
        "def bare(a, b: int, *args, c, **kwargs): pass\n"
        "def full(a: int, *args: str, c: int = 0, **kwargs: object) -> None: pass\n"
        "def _private(a): pass\n"
        "def outer() -> None:\n"
        "    def inner(a): pass\n"
        "try:\n"
        "    pass\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    class _Hidden:\n"
        "        def __init__(self, a: int): pass\n"
        "        def method(self, a: int) -> int: return a\n"
        "        def __repr__(self): return ''\n"
        "        @staticmethod\n"
        "        def static(self) -> None: pass\n"
        "        @classmethod\n"
        "        def make(cls, a) -> '_Hidden': return cls()\n"
        "        async def answer(self, request) -> None: pass\n"
    )
    assert missing_hints(source) == [
        "<source>:1 bare: a, c, *args, **kwargs, return",
        "<source>:12 _Hidden.__init__: return",
        "<source>:16 _Hidden.static: self",
        "<source>:18 _Hidden.make: a",
        "<source>:19 _Hidden.answer: request",
    ]
