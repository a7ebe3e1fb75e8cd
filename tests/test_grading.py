"""i2md_lib.grading: hand-made submissions that must pass or fail the own-work check.

Each submission is compiled as a notebook cell is (its source registered in ``linecache``,
module ``__main__``), so ``inspect`` sees it exactly as in a Jupyter kernel.
"""
from __future__ import annotations

import itertools
import linecache

import numpy as np
import pytest
import torch

from i2md_lib import grading, losses, skeleton
from i2md_lib.data import modalities
from i2md_lib.eval import knn

_cells = itertools.count()
SETUP = ("import numpy as np\nimport torch\nfrom i2md_lib import skeleton, losses\n"
         "from i2md_lib.data import modalities\n")


def define(code: str, name: str = "bones_torch"):
    """Run ``SETUP + code`` like a notebook cell and return the function ``name`` it defines."""
    source = SETUP + code
    filename = f"<cell-{next(_cells)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def messages(code: str, forbidden=(modalities,), loops: bool = False, name: str = "bones_torch"):
    return [f.message for f in grading.findings(define(code, name), list(forbidden), loops=loops)]


SOLUTION = """
def bones_torch(x):
    '''Bone vectors: for every joint, the joint minus its parent (uses to_bone's idea).'''
    # for each joint v we need PARENTS[v]; one gather does it for all joints at once
    parents = torch.tensor(skeleton.PARENTS.tolist(), device=x.device)   # while we are here: (25,)
    return x - x[..., parents, :]
"""


def test_a_vectorised_solution_with_for_in_comments_and_docstring_passes():
    assert messages(SOLUTION) == []
    fn = grading.own_work(define(SOLUTION), [modalities], loops=False)
    x = torch.randn(2, 3, 4, 25, 2)
    torch.testing.assert_close(fn(x), modalities.to_bone(x))


@pytest.mark.parametrize("code", [
    "def bones_torch(x):\n    return modalities.to_bone(x)",
    "def bones_torch(x):\n    return modalities.to_modality(x, 'bone')",
    "from i2md_lib.data.modalities import to_bone as tb\ndef bones_torch(x):\n    return tb(x)",
    "import i2md_lib.data.modalities as M\nf = M.to_bone\ndef bones_torch(x):\n    return f(x)",
    "import i2md_lib.data\ndef bones_torch(x):\n    return i2md_lib.data.modalities.to_bone(x)",
    "def bones_torch(x):\n    import i2md_lib.data.modalities as L\n    return L.to_bone(x)",
    "def bones_torch(x):\n    from i2md_lib.data.modalities import to_bone\n    return to_bone(x)",
    "def bones_torch(x):\n    g = modalities.to_bone\n    return g(x)",
    "def bones_torch(x):\n    return x - x[..., modalities._PARENTS, :]",
    "def helper(x):\n    return modalities.to_bone(x)\ndef bones_torch(x):\n    return helper(x)",
    "class Bones:\n    def run(self, x):\n        return modalities.to_bone(x)\n"
    "def bones_torch(x):\n    return Bones().run(x)",
    "helper = lambda x: modalities.to_bone(x)\ndef bones_torch(x):\n    return helper(x)",
], ids=["attribute", "other-entry-point", "from-import-alias", "module-alias+global", "package-path",
        "import-inside", "from-import-inside", "local-alias", "private-constant", "helper", "class-helper",
        "lambda-helper"])
def test_library_delegation_is_found_however_it_is_named(code: str):
    found = messages(code, loops=True)
    assert found and all("i2md_lib.data.modalities" in m for m in found), found


@pytest.mark.parametrize("code, word", [
    ("def bones_torch(x):\n    return getattr(modalities, 'to_' + 'bone')(x)", "getattr"),
    ("import importlib\ndef bones_torch(x):\n"
     "    return importlib.import_module('i2md_lib.data.' + 'modalities').to_bone(x)", "importlib"),
    ("def bones_torch(x):\n    return eval('modalities.to_' + 'bone')(x)", "eval"),
    ("import sys\ndef bones_torch(x):\n    return sys.modules['i2md_lib.data.' + 'modalities'].to_bone(x)",
     "sys.modules"),
    ("def bones_torch(x):\n    return vars(modalities)['to_' + 'bone'](x)", "vars"),
    ("def bones_torch(x):\n    return __import__('i2md_lib.data', fromlist=['x']).modalities.to_bone(x)",
     "__import__"),
], ids=["getattr", "importlib", "eval", "sys.modules", "vars", "__import__"])
def test_dynamic_lookups_are_found(code: str, word: str):
    found = messages(code, loops=True)
    assert any(word in m for m in found), found


@pytest.mark.parametrize("code, kind", [
    ("def bones_torch(x):\n    out = x.clone()\n    for v, p in enumerate(skeleton.PARENTS):\n"
     "        out[..., v, :] = x[..., v, :] - x[..., p, :]\n    return out", "a for loop"),
    ("def bones_torch(x):\n    out, v = x.clone(), 0\n    while v < 25:\n"
     "        out[..., v, :] -= x[..., skeleton.PARENTS[v], :]\n        v += 1\n    return out", "a while loop"),
    ("def bones_torch(x):\n    return torch.stack([x[..., v, :] - x[..., p, :]\n"
     "                        for v, p in enumerate(skeleton.PARENTS)], dim=-2)", "a comprehension"),
    ("def bones_torch(x):\n    return torch.stack(tuple(x[..., v, :] - x[..., p, :]\n"
     "                        for v, p in enumerate(skeleton.PARENTS)), dim=-2)", "a generator expression"),
    ("def bones_torch(x):\n    return torch.stack(list(map(lambda v: x[..., v, :] - x[..., skeleton.PARENTS[v], :],"
     " range(25))), dim=-2)", "map"),
    ("def bones_torch(x, v=24):\n    if v < 0:\n        return x.clone()\n    out = bones_torch(x, v - 1)\n"
     "    out[..., v, :] = x[..., v, :] - x[..., skeleton.PARENTS[v], :]\n    return out", "recursion"),
    ("def one(x, v):\n    return [x[..., v, :] - x[..., p, :] for p in [skeleton.PARENTS[v]]][0]\n"
     "def bones_torch(x):\n    return one(x, slice(None))", "a comprehension"),
], ids=["for", "while", "list-comprehension", "generator", "map", "recursion", "loop-in-helper"])
def test_python_loops_are_found_when_forbidden(code: str, kind: str):
    found = messages(code, loops=False)
    assert any(kind in m for m in found), found
    assert not any(kind in m for m in messages(code, loops=True)), "loops=True allows loops"


def test_findings_name_the_function_and_the_line_of_its_cell():
    code = "\ndef helper(x):\n    return modalities.to_bone(x)\n\ndef bones_torch(x):\n    return helper(x)"
    [finding] = grading.findings(define(code), [modalities])
    assert (finding.function, finding.line) == ("helper", SETUP.count("\n") + 3)
    assert str(finding).startswith("helper, line 7: uses i2md_lib.data.modalities.to_bone")


def test_own_work_raises_an_assertion_error_listing_every_finding():
    fn = define("def bones_torch(x):\n    y = [v for v in x]\n    return modalities.to_bone(x)")
    with pytest.raises(grading.DelegationError) as info:
        grading.own_work(fn, [modalities], loops=False)
    assert isinstance(info.value, AssertionError), "a delegating submission reads as a failed test"
    assert "comprehension" in str(info.value) and "to_bone" in str(info.value)


def test_forbidding_single_functions_leaves_the_rest_of_the_module_usable():
    code = ("def neighbour_kl(tk, tq, sq, ss, topk, tt, ts):\n"
            "    return losses.infonce(sq, tk, ss, ts)\n")
    assert messages(code, forbidden=[losses.neighbor_distillation, losses.cmd_loss], name="neighbour_kl") == []
    code2 = "def neighbour_kl(*a):\n    return losses.neighbor_distillation(*a)\n"
    assert messages(code2, forbidden=[losses.neighbor_distillation], name="neighbour_kl")


def test_a_delegation_hidden_from_the_syntax_tree_fails_when_it_runs():
    hidden = define("stash = [modalities]\ndef bones_torch(x):\n    return stash[0].to_bone(x)")
    assert grading.findings(hidden, [modalities]) == [], "the syntax tree cannot see this one"
    guarded = grading.own_work(hidden, [modalities])
    x = torch.randn(3, 2, 25, 1)
    with pytest.raises(grading.DelegationError, match="to_bone was called while your function ran"):
        guarded(x)
    torch.testing.assert_close(modalities.to_bone(x), x - x[..., skeleton.PARENTS.tolist(), :]), \
        "the library works again after the call"


def test_the_library_is_switched_back_on_after_an_error():
    original = knn.l2_normalise.__code__
    with pytest.raises(RuntimeError):
        with grading.library_switched_off([knn]):
            with pytest.raises(grading.DelegationError):
                knn.l2_normalise(np.ones((2, 2)))
            raise RuntimeError("the student's function failed")
    assert knn.l2_normalise.__code__ is original
    np.testing.assert_allclose(knn.l2_normalise(np.array([[3.0, 4.0]])), [[0.6, 0.8]])


def test_functions_without_source_are_refused_and_bad_arguments_are_clear():
    namespace = {"__name__": "__main__"}
    exec("def bones_torch(x):\n    return x", namespace)   # no source anywhere: cannot be checked
    [finding] = grading.findings(namespace["bones_torch"], [modalities])
    assert "source cannot be read" in finding.message
    with pytest.raises(ValueError, match="at least one forbidden"):
        grading.findings(define(SOLUTION), [])
    with pytest.raises(TypeError, match="modules or functions"):
        grading.findings(define(SOLUTION), ["i2md_lib.data.modalities"])


def test_a_decorated_function_is_read_through_its_decorator():
    code = ("@torch.no_grad()\ndef bones_torch(x):\n    return modalities.to_bone(x)\n")
    assert any("to_bone" in m for m in messages(code))
    clean = "@torch.no_grad()\ndef bones_torch(x):\n    return x - x[..., skeleton.PARENTS.tolist(), :]\n"
    assert messages(clean) == []
