"""Hand-made submissions of every classroom assignment, and the points each must earn.

Used by ``tests/test_classroom.py`` (graded with ``student_versions.grade``) and by
``tools/nbgrader_roundtrip.py`` (graded by nbgrader itself). A submission is the released
student notebook with some solution cells filled in:

* ``solution``   -- the teacher's answers (solution markers removed), written answers too;
* ``comment_for``-- the teacher's answers with a comment saying "for every ..." in each
  function, which must not be mistaken for a loop;
* ``partial``    -- only the first function answered (the teacher's answer), the rest untouched;
* ``delegation`` -- every function hands the work to the library (aliases, helpers, getattr,
  importlib, scikit-learn), which must earn nothing;
* ``empty``      -- the released notebook as it is;
* ``wrong``      -- a plausible mistake in every function (tests only).
"""
from __future__ import annotations

import copy
import re

import student_versions as sv

KINDS = ("solution", "comment_for", "partial", "delegation", "empty")

#: A function that calls the library it should replace, for every solution cell.
DELEGATIONS = {
    "bones": "from i2md_lib.data.modalities import to_bone as tb\n\n"
             "def bones(x):\n    return tb(x)",
    "bones_torch": "def bones_torch(x):\n    return modalities.to_modality(x, 'bone')",
    "neighbour_kl": "import i2md_lib.losses as L\n\n"
                    "def neighbour_kl(tk, tq, sq, ss, topk, tau_t, tau_s):\n"
                    "    return L.neighbor_distillation(tk, tq, sq, ss, topk, tau_t, tau_s)",
    "mutual_distillation": "def mutual_distillation(keys, queries, queues, topk, tau_t, tau_s):\n"
                           "    return losses.cmd_loss(keys, queries, queues, topk, tau_t, tau_s)[0]",
    "select": "def select(key, queue, max_neighbors, threshold, margin):\n"
              "    pick = getattr(dna, 'select_neighbors')\n"
              "    return pick(key, queue, max_neighbors, threshold, margin)",
    "aggregate": "def _weights_and_mean(*args):\n    return dna.aggregate_neighbors(*args)\n\n"
                 "def aggregate(key, queue, index, similarity, selected, tau):\n"
                 "    return _weights_and_mean(key, queue, index, similarity, selected, tau)",
    "normalise": "from i2md_lib.eval.knn import l2_normalise\n\n"
                 "def normalise(features):\n    return l2_normalise(features)",
    "nearest_neighbour_accuracy": "from sklearn.neighbors import KNeighborsClassifier\n\n"
                                  "def nearest_neighbour_accuracy(gallery, gallery_labels, queries, query_labels):\n"
                                  "    knn = KNeighborsClassifier(n_neighbors=1, metric='cosine').fit(gallery, gallery_labels)\n"
                                  "    return float(100.0 * (knn.predict(queries) == query_labels).mean())",
    "select_by_validation": "import importlib\n\n"
                            "def select_by_validation(val_top1, test_top1):\n"
                            "    r = importlib.import_module('i2md_lib.eval.results')\n"
                            "    curve = [r.EvalPoint(i, 0.0, v, t) for i, (v, t) in enumerate(zip(val_top1, test_top1))]\n"
                            "    i = r.select_index(curve, 'val')\n"
                            "    return i, float(test_top1[i])",
}

#: A plausible wrong answer for every solution cell: each must make its test cell fail.
WRONG_ANSWERS = {
    "bones": "def bones(x):\n    out = np.zeros_like(x)\n    for c, p in skeleton.NTU_BONE_PAIRS_1BASED:\n"
             "        out[..., c - 1, :] = x[..., p - 1, :] - x[..., c - 1, :]\n    return out",
    "bones_torch": "def bones_torch(x):\n    parents = torch.tensor(skeleton.PARENTS.tolist())\n"
                   "    return x - x[..., parents, :].detach()",
    "neighbour_kl": "def neighbour_kl(tk, tq, sq, ss, topk, tau_t, tau_s):\n"
                    "    top, index = (tk @ tq.T).topk(topk, dim=1)\n"
                    "    p = F.softmax(top / tau_s, dim=1)\n"
                    "    log_q = F.log_softmax((sq @ ss.T).gather(1, index) / tau_s, dim=1)\n"
                    "    return (p * (p.log() - log_q)).sum(1).mean()",
    "mutual_distillation": "def mutual_distillation(keys, queries, queues, topk, tau_t, tau_s):\n"
                           "    return sum(neighbour_kl(keys[t], queues[t], queries[s], queues[s], topk, tau_t, tau_s)\n"
                           "               for t, s in itertools.combinations(keys, 2))",
    "select": "def select(key, queue, max_neighbors, threshold, margin):\n"
              "    k = min(max_neighbors, len(queue))\n"
              "    similarity, index = (key @ queue.T).topk(k, dim=1)\n"
              "    return index, similarity, similarity >= threshold",
    "aggregate": "def aggregate(key, queue, index, similarity, selected, tau):\n"
                 "    w = torch.softmax(torch.cat([torch.ones(len(key), 1), similarity], 1) / tau, dim=1)\n"
                 "    members = torch.cat([key[:, None], queue[index]], 1)\n"
                 "    return F.normalize((w[..., None] * members).sum(1), dim=1)",
    "normalise": "def normalise(features):\n    features = np.asarray(features, dtype=np.float32)\n"
                 "    return features / np.linalg.norm(features, axis=1, keepdims=True)",
    "nearest_neighbour_accuracy": "def nearest_neighbour_accuracy(gallery, gallery_labels, queries, query_labels):\n"
                                  "    distance = ((queries[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)\n"
                                  "    predicted = np.asarray(gallery_labels)[distance.argmin(axis=1)]\n"
                                  "    return float(100.0 * np.mean(predicted == query_labels))",
    "select_by_validation": "def select_by_validation(val_top1, test_top1):\n"
                            "    i = int(np.argmax(test_top1))\n"
                            "    return i, float(test_top1[i])",
}

_MARKER = re.compile(r"^(?P<indent>[ \t]*)### (BEGIN|END) SOLUTION[ \t]*$")


def teacher_answers(teacher: dict, comment: str | None = None) -> dict[str, str]:
    """grade_id -> the teacher's solution cell without its markers.

    With ``comment``, the line ``# <comment>`` takes the place of each ``BEGIN SOLUTION``
    marker of a code cell (inside the function, at the marker's indentation).
    """
    answers = {}
    for cell in teacher["cells"]:
        if not sv.is_solution_cell(cell):
            continue
        lines = []
        for line in sv.cell_source(cell).split("\n"):
            match = _MARKER.match(line)
            if not match:
                lines.append(line)
            elif comment and cell["cell_type"] == "code" and "BEGIN" in line:
                lines.append(f"{match['indent']}# {comment}")
        answers[sv.nbgrader_meta(cell)["grade_id"]] = "\n".join(lines).strip("\n")
    return answers


def fill(nb: dict, answers: dict[str, str]) -> dict:
    """``nb`` with the solution cells named in ``answers`` replaced by those sources."""
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        grade_id = sv.nbgrader_meta(cell).get("grade_id")
        if sv.is_solution_cell(cell) and grade_id in answers:
            cell["source"] = answers[grade_id].splitlines(keepends=True)
    return out


def code_solutions(teacher: dict) -> list[str]:
    """grade_ids of the code solution cells, in notebook order."""
    return [sv.nbgrader_meta(c)["grade_id"] for c in teacher["cells"]
            if sv.is_solution_cell(c) and c["cell_type"] == "code"]


def submission(teacher: dict, student: dict, kind: str) -> dict:
    """The ``kind`` submission of an assignment, made from its released ``student`` notebook."""
    if kind == "solution":
        return fill(student, teacher_answers(teacher))
    if kind == "comment_for":
        answers = teacher_answers(teacher, comment="for every input this computes the answer at once "
                                                   "(a comment: for, while and [x for x in y] are words here)")
        return fill(student, {k: v for k, v in answers.items() if k in code_solutions(teacher)})
    if kind == "partial":
        first = code_solutions(teacher)[0]
        return fill(student, {first: teacher_answers(teacher)[first]})
    if kind == "delegation":
        return fill(student, {k: DELEGATIONS[k] for k in code_solutions(teacher)})
    if kind == "wrong":
        return fill(student, {k: WRONG_ANSWERS[k] for k in code_solutions(teacher)})
    if kind == "empty":
        return copy.deepcopy(student)
    raise ValueError(f"unknown submission kind {kind!r}; expected one of {KINDS + ('wrong',)}")


def test_cells(teacher: dict) -> list[tuple[str, float]]:
    """(grade_id, points) of every autograded test cell, in notebook order."""
    return [(sv.nbgrader_meta(c)["grade_id"], float(sv.nbgrader_meta(c)["points"]))
            for c in teacher["cells"] if sv.is_test_cell(c)]


def expected_points(teacher: dict, kind: str) -> dict[str, float]:
    """Autograded points each test cell must give the ``kind`` submission."""
    tests = test_cells(teacher)
    if kind in ("solution", "comment_for"):
        return dict(tests)
    if kind == "partial":
        return {grade_id: points if i == 0 else 0.0 for i, (grade_id, points) in enumerate(tests)}
    if kind in ("delegation", "empty", "wrong"):
        return {grade_id: 0.0 for grade_id, _ in tests}
    raise ValueError(f"unknown submission kind {kind!r}")
