"""Checks that an assignment's function is the student's own work (used by ``classroom/``).

The classroom assignments ask students to write a piece of this library and compare it
with the library's own function. A submission that simply *calls* that function would
pass every comparison, so each test cell first hands the student's function to
:func:`own_work`, which does two things:

1. It reads the function's **syntax tree** -- and the tree of every notebook function or
   class it refers to, so a helper cannot hide a call -- and fails when the code refers to
   a forbidden object, however it is named: ``modalities.to_bone(x)``,
   ``from i2md_lib.data.modalities import to_bone as tb`` (in the function or at the top
   of the notebook), ``import i2md_lib.losses as L; L.cmd_loss(...)``, ``f = dna.select_neighbors``
   at module level. Names are resolved against the function's real globals, so an alias
   is caught by *what it is*, not by how it is spelled. Dynamic lookups that would hide a
   reference fail too: ``getattr`` on a forbidden module or with a forbidden name,
   ``importlib``, ``__import__``, ``eval``/``exec``/``compile``, ``sys.modules``,
   ``globals()``/``vars()`` and the ``__code__``/``__globals__``/``__wrapped__`` attributes.
   With ``loops=False`` it also fails on **Python loops**: ``for``/``while`` statements,
   comprehensions, generator expressions, recursion and ``map``/``filter``/``reduce``/
   ``np.vectorize``/``np.apply_along_axis``. Comments and strings are not code, so a
   comment that says "for every joint" is fine.
2. It returns a wrapper that runs the function with the forbidden **library functions
   switched off** (their code object is swapped for one that raises
   :class:`DelegationError`), so a delegation the syntax tree did not see -- a name built
   from pieces at run time, say -- still fails when it runs.

Both failures raise :class:`DelegationError`, an ``AssertionError``, so a delegating
submission reads as a failed test. Grading runs students' code in one kernel: this stops
honest shortcuts, not a student who patches the checker itself (teachers read the code).
"""
from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DelegationError", "Finding", "findings", "own_work", "library_switched_off"]

Forbidden = types.ModuleType | Callable[..., Any]


class DelegationError(AssertionError):
    """A submission uses the library function it should write, or loops where it should not."""


@dataclass(frozen=True)
class Finding:
    """One problem in a student's function: where (function, line of its cell) and what."""

    function: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.function}, line {self.line}: {self.message}"


_MISSING = object()
#: Functions that hide a Python loop over elements.
_LOOP_FUNCTIONS = (map, filter, functools.reduce, np.vectorize, np.apply_along_axis, np.frompyfunc)
#: Ways to reach any object by a name computed at run time.
_DYNAMIC = {id(f): f"{f.__name__}()" for f in (eval, exec, compile, __import__, globals, vars)}
_DYNAMIC[id(sys.modules)] = "sys.modules"
_DYNAMIC_ATTRIBUTES = ("__code__", "__globals__", "__wrapped__", "__closure__", "__builtins__")


# -- what is forbidden -------------------------------------------------------------------------
def _module_names(forbidden: Iterable[Forbidden]) -> tuple[str, ...]:
    return tuple(f.__name__ for f in forbidden if isinstance(f, types.ModuleType))


def _in_modules(name: str | None, modules: tuple[str, ...]) -> bool:
    return bool(name) and any(name == m or name.startswith(m + ".") for m in modules)


def _describe(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class _Rules:
    """The forbidden objects of one check, and how to recognise them."""

    def __init__(self, forbidden: Iterable[Forbidden]) -> None:
        self.objects = list(forbidden)
        if not self.objects:
            raise ValueError("own_work needs at least one forbidden module or function")
        for obj in self.objects:
            if not (isinstance(obj, types.ModuleType) or callable(obj)):
                raise TypeError(f"forbidden entries are modules or functions, got {obj!r}")
        self.modules = _module_names(self.objects)
        self.ids = {id(o) for o in self.objects} | {id(inspect.unwrap(o)) for o in self.objects
                                                    if callable(o)}
        self.names = {o.__name__.rsplit(".", 1)[-1] for o in self.objects}
        self.names |= {n for m in self.objects if isinstance(m, types.ModuleType)
                       for n, v in vars(m).items() if callable(v) and not n.startswith("_")
                       and _in_modules(getattr(v, "__module__", None), self.modules)}

    def forbids(self, obj: Any) -> bool:
        """Is ``obj`` a forbidden object, or does it live in a forbidden module?"""
        if id(obj) in self.ids:
            return True
        if isinstance(obj, types.ModuleType):
            return _in_modules(obj.__name__, self.modules)
        if isinstance(obj, (types.FunctionType, type, types.BuiltinFunctionType)):
            return _in_modules(getattr(obj, "__module__", None), self.modules)
        return False

    def holds_forbidden(self, obj: Any) -> bool:
        """Is ``obj`` a module through which a forbidden object can be reached by name?"""
        return isinstance(obj, types.ModuleType) and (
            self.forbids(obj) or any(self.forbids(v) for v in vars(obj).values()))

    def names_forbidden(self, text: str) -> bool:
        """Does a string constant spell a forbidden function or module (``"to_bone"``, ``"i2md_lib..."``)?"""
        return text in self.names or text.startswith("i2md_lib") or _in_modules(text, self.modules)


# -- reading a function's syntax tree ----------------------------------------------------------
def _source_tree(obj: types.FunctionType) -> tuple[ast.AST, int]:
    """The syntax tree of a function (of its lambdas, for a lambda) and the line its source starts at."""
    lines, first = inspect.getsourcelines(obj)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    if getattr(obj, "__name__", "") == "<lambda>":
        lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
        tree = ast.Module(body=[ast.Expr(lam) for lam in lambdas], type_ignores=[])
    return tree, first


def _bound_names(tree: ast.AST) -> set[str]:
    """Names bound inside the function of ``tree`` (arguments, assignments, loop targets...).

    The function's own name is not among them: in its body it refers to the function itself.
    """
    top = tree.body[0] if isinstance(tree, ast.Module) and len(tree.body) == 1 else tree
    roots = [top.args, *top.body] if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) else [tree]
    names: set[str] = set()
    for node in (n for root in roots for n in ast.walk(root)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    globals_ = {n for root in roots for node in ast.walk(root) if isinstance(node, (ast.Global, ast.Nonlocal))
                for n in node.names}
    return names - globals_


def _import_module(name: str) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except Exception:          # an import that fails at run time fails the test there
        return _MISSING


class _Reader(ast.NodeVisitor):
    """Collects the findings of one function's syntax tree."""

    def __init__(self, fn: types.FunctionType, rules: _Rules, loops: bool, checker: "_Checker") -> None:
        self.fn, self.rules, self.loops, self.checker = fn, rules, loops, checker
        self.name = fn.__qualname__
        self.globals = fn.__globals__
        self.closure = {}
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                self.closure[name] = cell.cell_contents
            except ValueError:          # an empty cell
                pass
        self.imported: dict[str, Any] = {}
        self.local: set[str] = set()
        self.first_line = 1

    def read(self) -> None:
        try:
            tree, self.first_line = _source_tree(self.fn)
        except (OSError, TypeError, SyntaxError) as e:
            self.report(None, f"its source cannot be read ({e}); define it in a notebook cell")
            return
        self.local = _bound_names(tree) - set(self.closure)
        self.visit(tree)

    def report(self, node: ast.AST | None, message: str) -> None:
        line = self.first_line + (node.lineno - 1 if node is not None and hasattr(node, "lineno") else 0)
        self.checker.found.append(Finding(self.name, line, message))

    # -- resolving names to the objects they stand for
    def resolve(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            if node.id in self.imported:
                return self.imported[node.id]
            if node.id in self.local:
                return _MISSING
            for scope in (self.closure, self.globals, vars(builtins)):
                if node.id in scope:
                    return scope[node.id]
            return _MISSING
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is _MISSING:
                return _MISSING
            try:
                return inspect.getattr_static(base, node.attr)
            except AttributeError:
                if isinstance(base, types.ModuleType):      # lazily loaded submodules
                    return getattr(base, node.attr, _MISSING)
                return _MISSING
        return _MISSING

    def check_reference(self, node: ast.AST, obj: Any) -> bool:
        """Report ``obj`` if it is forbidden; follow it if it is the student's own code."""
        if obj is _MISSING:
            return False
        if self.rules.forbids(obj):
            self.report(node, f"uses {_describe(obj)}, which this exercise asks you to write yourself")
            return True
        if id(obj) in _DYNAMIC or (isinstance(obj, types.ModuleType) and obj.__name__ == "importlib") \
                or getattr(obj, "__module__", "") == "importlib":
            what = _DYNAMIC.get(id(obj), "importlib")
            self.report(node, f"uses {what}, a run-time lookup that can hide a library call")
            return True
        if not self.loops and any(obj is f for f in _LOOP_FUNCTIONS):
            self.report(node, f"uses {getattr(obj, '__name__', obj)}, a Python loop in disguise")
            return True
        if not self.loops and obj is self.fn:
            self.report(node, "calls itself: recursion is a Python loop too")
            return True
        self.checker.follow(obj)
        return False

    # -- visitors
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.check_reference(node, self.resolve(node))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in _DYNAMIC_ATTRIBUTES:
            self.report(node, f"uses .{node.attr}, a run-time lookup that can hide a library call")
            return
        if not self.check_reference(node, self.resolve(node)):
            self.generic_visit(node)        # modalities._PARENTS: the module itself is reported

    def visit_Call(self, node: ast.Call) -> None:
        if self.resolve(node.func) is getattr and node.args:
            holder = self.resolve(node.args[0])
            name = node.args[1] if len(node.args) > 1 else None
            if self.rules.holds_forbidden(holder):
                harmless = (isinstance(name, ast.Constant) and isinstance(name.value, str)
                            and not self.rules.names_forbidden(name.value)
                            and not self.rules.forbids(getattr(holder, name.value, None)))
                if not harmless:
                    self.report(node, f"looks up a name in {_describe(holder)} with getattr")
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            self.generic_visit(node)        # a docstring (or a bare string) is not code

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and self.rules.names_forbidden(node.value):
            self.report(node, f"spells the forbidden name {node.value!r}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            module = _import_module(alias.name)
            top = _import_module(alias.name.split(".")[0])
            self.imported[alias.asname or alias.name.split(".")[0]] = module if alias.asname else top
            self.check_reference(node, module)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:                          # relative imports make no sense in a notebook
            self.report(node, "uses a relative import")
            return
        module = _import_module(node.module or "")
        if module is _MISSING:
            return
        for alias in node.names:
            obj = getattr(module, alias.name, _MISSING)
            if obj is _MISSING:
                obj = _import_module(f"{node.module}.{alias.name}")
            self.imported[alias.asname or alias.name] = obj
            if not self.check_reference(node, obj) and alias.name == "*" \
                    and self.rules.holds_forbidden(module):
                self.report(node, f"imports * from {_describe(module)}")

    def _loop(self, node: ast.AST) -> None:
        if not self.loops:
            kind = {ast.For: "a for loop", ast.AsyncFor: "an async for loop", ast.While: "a while loop",
                    ast.GeneratorExp: "a generator expression"}.get(type(node), "a comprehension")
            self.report(node, f"uses {kind}; this exercise asks for vectorised code without Python loops")
        self.generic_visit(node)

    visit_For = visit_AsyncFor = visit_While = _loop
    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _loop


class _Checker:
    """Reads a function and, transitively, every notebook function or class it refers to."""

    def __init__(self, fn: Callable[..., Any], rules: _Rules, loops: bool) -> None:
        self.rules, self.loops = rules, loops
        self.home = getattr(fn, "__module__", None)
        self.seen: set[int] = set()
        self.found: list[Finding] = []
        self.follow(fn, always=True)

    def follow(self, obj: Any, always: bool = False) -> None:
        """Read ``obj`` if it is a function or class written next to the student's function.

        A class is read method by method (``inspect`` cannot find a notebook class's source).
        """
        if isinstance(obj, functools.partial):
            obj = obj.func
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if isinstance(obj, property):
            obj = obj.fget
        own = isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == self.home
        if not (always or own) or id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if isinstance(obj, types.FunctionType) and hasattr(obj, "__wrapped__"):
            inner = inspect.unwrap(obj)     # a decorated function: read what the decorator wraps,
            self.follow(inner, always=True)
            if getattr(inner, "__code__", None) is None \
                    or obj.__code__.co_filename != inner.__code__.co_filename:
                return                      # and the wrapper too when it was written alongside
        if isinstance(obj, type):
            for name, value in vars(obj).items():
                if self.rules.forbids(value):
                    self.found.append(Finding(obj.__qualname__, 0, f"attribute {name} is {_describe(value)}, "
                                              "which this exercise asks you to write yourself"))
                else:
                    self.follow(value)
        elif isinstance(obj, types.FunctionType):
            _Reader(obj, self.rules, self.loops, self).read()
        else:
            self.found.append(Finding(repr(obj), 0, "is not a Python function, so it cannot be checked"))


def findings(fn: Callable[..., Any], forbidden: Iterable[Forbidden], *, loops: bool = True) -> list[Finding]:
    """Problems in ``fn``'s syntax tree (and its notebook helpers'): forbidden uses, and loops if ``not loops``."""
    if not callable(fn):
        raise TypeError(f"expected the function to check, got {type(fn).__name__}")
    return _Checker(fn, _Rules(forbidden), loops).found


# -- switching the library off while the student's function runs -------------------------------
def _plain_functions(forbidden: Iterable[Forbidden]) -> list[types.FunctionType]:
    """The Python functions behind ``forbidden``: listed ones, and those defined in listed modules."""
    modules = _module_names(forbidden)
    out: dict[int, types.FunctionType] = {}
    candidates: list[Any] = [f for f in forbidden if not isinstance(f, types.ModuleType)]
    for name, module in list(sys.modules.items()):
        if _in_modules(name, modules) and module is not None:
            candidates += [v for v in vars(module).values()
                           if _in_modules(getattr(v, "__module__", None), modules)]
    for obj in candidates:
        if isinstance(obj, type):
            candidates_in_class = [v for v in vars(obj).values() if isinstance(v, types.FunctionType)]
        else:
            candidates_in_class = [obj]
        for f in candidates_in_class:
            f = inspect.unwrap(f) if callable(f) else f
            if isinstance(f, types.FunctionType) and not f.__closure__:
                out[id(f)] = f
    return list(out.values())


@functools.lru_cache(maxsize=None)
def _raising_code(module: str, qualname: str) -> types.CodeType:
    """A code object (no free variables) that raises :class:`DelegationError` naming the function."""
    message = f"{module}.{qualname} was called while your function ran; this exercise asks you to write it yourself"
    source = (f"def switched_off(*args, **kwargs):\n"
              f"    raise __import__('i2md_lib.grading', fromlist=['_']).DelegationError({message!r})\n")
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<switched off: {qualname}>", "exec"), namespace)
    return namespace["switched_off"].__code__


@contextmanager
def library_switched_off(forbidden: Iterable[Forbidden]) -> Iterator[None]:
    """Within the block, every Python function behind ``forbidden`` raises :class:`DelegationError`."""
    functions = _plain_functions(list(forbidden))
    saved = [(f, f.__code__) for f in functions]
    try:
        for f in functions:
            f.__code__ = _raising_code(f.__module__, f.__qualname__)
        yield
    finally:
        for f, code in saved:
            f.__code__ = code


def own_work(fn: Callable[..., Any], forbidden: Iterable[Forbidden], *,
             loops: bool = True) -> Callable[..., Any]:
    """Check ``fn`` and return it wrapped so that it runs with ``forbidden`` switched off.

    Args:
        fn: the student's function.
        forbidden: modules (everything defined in them, submodules included) and functions
            the exercise asks the student to write instead of call.
        loops: ``False`` when the exercise asks for vectorised code.

    Raises:
        DelegationError: listing every finding of :func:`findings`.
    """
    forbidden = list(forbidden)
    problems = findings(fn, forbidden, loops=loops)
    if problems:
        raise DelegationError(f"{getattr(fn, '__name__', fn)} is not accepted:\n"
                              + "\n".join(f"  - {p}" for p in problems))

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        with library_switched_off(forbidden):
            return fn(*args, **kwargs)

    return guarded
