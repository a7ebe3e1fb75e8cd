"""From result files to the tables the book shows: one rule for the headline numbers.

Every result file (:mod:`i2md_lib.experiments`) holds metric rows, one per protocol,
stream and label fraction. The *headline value* of a row is fixed here, once:

==============  =================================  ======================
protocol        value                              column
==============  =================================  ======================
``knn``         ``top1@k=1`` (1-NN, as CMD)        ``knn <stream>``
``linear``      ``top1`` (test at the chosen       ``linear <stream>``
                epoch, see ``EvalConfig.select_on``)
``semi``        ``top1_mean`` over label draws     ``semi <fraction>%``
==============  =================================  ======================

(``linear_fast`` counts as ``linear``; ``finetune`` is ``finetune <stream>``.)
:func:`headline_values` gives one row per (variant, seed) and one column per
headline metric; :func:`summary_table` their mean ± std per variant.

Comparisons are *paired*: two variants trained with the same seed share their data
order, initialisation and evaluation draws, so :func:`comparison_table` reports the mean
over seeds of the per-seed difference with its 95 % Student-t interval
(:func:`i2md_lib.stats.paired_difference`), and a verdict only when the interval
excludes zero.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import stats

#: The four metrics every method comparison of the book reports.
HEADLINE_METRICS: tuple[str, ...] = ("knn joint", "linear joint", "linear ensemble", "semi 1%")
#: The ladder of the main suite: each step adds one idea to the one before.
LADDER: tuple[tuple[str, str], ...] = (("moco3", "moco_joint"), ("cmd", "moco3"), ("cmd_dna", "cmd"),
                                       ("i2md", "cmd_dna"))
STREAMS: tuple[str, ...] = ("joint", "motion", "bone", "ensemble")


def headline_value(row: Mapping[str, Any]) -> tuple[str, float] | None:
    """``(column, value)`` of one metric row of a result file, or ``None`` for rows
    without a headline value."""
    protocol = row.get("protocol")
    if protocol == "knn":
        return f"knn {row['modality']}", float(row["top1@k=1"])
    if protocol in ("linear", "linear_fast"):
        return f"linear {row['modality']}", float(row["top1"])
    if protocol == "semi":
        return f"semi {row['fraction']:.0%}", float(row["top1_mean"])
    if protocol == "finetune":
        return f"finetune {row['modality']}", float(row["top1"])
    return None


def metrics_frame(records: Sequence[Mapping[str, Any]]):
    """All metric rows of ``records`` as one pandas DataFrame (variant, label, seed + metric columns)."""
    import pandas as pd

    rows = [{"variant": r["variant"], "label": r["label"], "seed": r["seed"], **m}
            for r in records for m in r["metrics"]]
    return pd.DataFrame(rows)


def headline_values(records: Sequence[Mapping[str, Any]]):
    """One row per (variant, seed), one column per headline metric (a pandas DataFrame
    indexed by ``variant`` and ``seed``, variants in the order of ``records``)."""
    import pandas as pd

    rows = []
    for record in records:
        for metric in record["metrics"]:
            headline = headline_value(metric)
            if headline is not None:
                rows.append((record["variant"], record["seed"], *headline))
    long = pd.DataFrame(rows, columns=["variant", "seed", "metric", "value"])
    wide = long.pivot_table(index=["variant", "seed"], columns="metric", values="value", sort=False)
    return wide[_column_order(wide.columns)]


def _column_order(columns: Sequence[str]) -> list[str]:
    """kNN and linear per stream first, then semi-supervised by fraction, then the rest."""
    preferred = [f"{p} {s}" for p in ("knn", "linear") for s in STREAMS if f"{p} {s}" in columns]
    semi = sorted((c for c in columns if c.startswith("semi")), key=lambda c: float(c.split()[1].rstrip("%")))
    return preferred + semi + [c for c in columns if c not in preferred and c not in semi]


#: "±" between no-break spaces: a table cell "82.5 ± 0.9" never breaks onto a second line.
PLUS_MINUS = "\u00a0±\u00a0"


def mean_sd(mean: float, sd: float, digits: int = 1) -> str:
    """``"82.5 ± 0.9"`` with no-break spaces around ``±`` (:data:`PLUS_MINUS`)."""
    return f"{mean:.{digits}f}{PLUS_MINUS}{sd:.{digits}f}"


def summary_table(records: Sequence[Mapping[str, Any]], digits: int = 1, index: str = "label"):
    """Mean ± std over seeds of every headline column; one row per variant, in the order of
    ``records``, named by its ``label`` or, with ``index="variant"``, by its short id (the
    labels then go in a key, :func:`variant_key`)."""
    import pandas as pd

    if index not in ("label", "variant"):
        raise ValueError(f"index must be 'label' or 'variant', got {index!r}")
    values = headline_values(records)
    names = {r["variant"]: r[index] for r in records}
    grouped = values.groupby(level="variant", sort=False)
    mean, std, count = grouped.mean(), grouped.std(ddof=1), grouped.count()

    def cell(m: float, s: float, n: int) -> str:
        if pd.isna(m):
            return ""
        return f"{m:.{digits}f}" if n < 2 or pd.isna(s) else mean_sd(m, s, digits)

    return pd.DataFrame({c: [cell(mean.loc[v, c], std.loc[v, c], count.loc[v, c]) for v in mean.index]
                         for c in values.columns}, index=[names[v] for v in mean.index])


def variant_key(records: Sequence[Mapping[str, Any]]):
    """The key of short row names: one row per variant id of ``records`` (their order) with its label."""
    import pandas as pd

    labels = dict((r["variant"], r["label"]) for r in records)
    return pd.DataFrame({"what it is": list(labels.values())}, index=pd.Index(list(labels), name="row"))


def paired(values, a: str, b: str, metric: str, confidence: float = 0.95,
           method: str = "t") -> stats.Interval | None:
    """Mean over seeds of ``a - b`` on ``metric`` and its interval (seeds both variants have);
    ``None`` with fewer than two such seeds (or a variant without runs). ``values``: :func:`headline_values`."""
    table = values[metric].unstack("variant") if metric in values else None
    both = table[[a, b]].dropna() if table is not None and {a, b} <= set(table.columns) else None
    if both is None or len(both) < 2:
        return None
    return stats.paired_difference(both[a].to_numpy(), both[b].to_numpy(), confidence, method)


def verdict(interval: stats.Interval | None, a: str, b: str) -> str:
    """``"a > b"`` or ``"a < b"`` when the interval excludes 0, else ``"undecided"``."""
    if interval is None:
        return "–"
    if interval.low > 0:
        return f"{a} > {b}"
    if interval.high < 0:
        return f"{a} < {b}"
    return "undecided"


def comparison_table(values, pairs: Sequence[tuple[str, str]] = LADDER,
                     metrics: Sequence[str] = HEADLINE_METRICS, confidence: float = 0.95):
    """One row per (comparison, metric): the paired mean difference ``a - b`` (points), its
    ``confidence`` Student-t interval and half-width, the standard deviation of the per-seed
    differences (what :func:`stats.seeds_needed` sizes from), the number of seeds and the verdict."""
    import pandas as pd

    rows = []
    for a, b in pairs:
        for metric in metrics:
            iv = paired(values, a, b, metric, confidence)
            rows.append({"comparison": f"{a} − {b}", "metric": metric,
                         "difference": iv.mean if iv else float("nan"),
                         "low": iv.low if iv else float("nan"), "high": iv.high if iv else float("nan"),
                         "half-width": iv.half_width if iv else float("nan"),
                         "sd": iv.sd if iv else float("nan"),
                         "seeds": iv.n if iv else 0, "verdict": verdict(iv, a, b)})
    return pd.DataFrame(rows).set_index(["comparison", "metric"])


def interval_cells(table, digits: int = 1):
    """:func:`comparison_table` as compact cells ``+1.2 [−0.3, +2.7]`` (comparisons x metrics), the
    comparisons and metrics in the table's order (the ladder reads from the bottom rung up)."""
    return by_comparison(_cells(table, digits))


def _cells(table, digits: int):
    """The rows of :func:`comparison_table` as cells ``+1.2 [−0.3, +2.7]`` (``–`` under two seeds)."""
    return table.apply(lambda r: (f"{r['difference']:+.{digits}f} [{r['low']:+.{digits}f}, {r['high']:+.{digits}f}]"
                                  if r["seeds"] >= 2 else "–"), axis=1)


def first_seeds(records: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """The records of the ``n`` lowest seeds of ``records`` (the seeds a suite had when it had ``n``)."""
    seeds = sorted({r["seed"] for r in records})
    if not 1 <= n <= len(seeds):
        raise ValueError(f"first_seeds: asked for the first {n} seeds, the records have {len(seeds)}")
    keep = set(seeds[:n])
    return [r for r in records if r["seed"] in keep]


def intervals_by_seeds(records: Sequence[Mapping[str, Any]], counts: Sequence[int],
                       pairs: Sequence[tuple[str, str]] = LADDER, metrics: Sequence[str] = HEADLINE_METRICS,
                       moved_only: bool = False, digits: int = 1):
    """The paired intervals of :func:`comparison_table` recomputed on the first ``n`` seeds
    (:func:`first_seeds`) for each ``n`` of ``counts``: one row per (comparison, metric), one column
    ``"<n> seeds"`` of cells ``+1.2 [−0.3, +2.7]``. With ``moved_only``, only the rows whose verdict
    (:func:`verdict`: above, below or undecided) is not the same at every count."""
    import pandas as pd

    tables = {n: comparison_table(headline_values(first_seeds(records, n)), pairs, metrics) for n in counts}
    cells = pd.DataFrame({f"{n} seeds": _cells(t, digits) for n, t in tables.items()})
    if not moved_only:
        return cells
    verdicts = pd.DataFrame({n: t["verdict"] for n, t in tables.items()})
    return cells[(verdicts.nunique(axis=1) > 1).to_numpy()]


def by_comparison(column):
    """One column of :func:`comparison_table` (a Series indexed by comparison and metric) as a
    comparisons x metrics frame, both in the order of the table (``unstack`` alone sorts them)."""
    rows = list(dict.fromkeys(column.index.get_level_values("comparison")))
    metrics = list(dict.fromkeys(column.index.get_level_values("metric")))
    return column.unstack("metric").reindex(rows)[metrics]


def seeds_needed_table(table, target_half_width: float, confidence: float = 0.95):
    """How many paired seeds each comparison of :func:`comparison_table` needs for a 95 %
    interval of half-width ``target_half_width`` points, from the SD of its per-seed differences
    (:func:`stats.seeds_needed`), as a comparisons x metrics frame. NaN where the SD is unknown
    (fewer than two seeds)."""
    import math

    return by_comparison(table["sd"].map(
        lambda sd: stats.seeds_needed(sd, target_half_width, confidence) if math.isfinite(sd) else math.nan))


#: The metrics on which a testbed must put an untrained encoder far below the pretrained ones.
FLOOR_METRICS: tuple[str, ...] = ("knn joint", "linear joint")


def floor_table(values, floor: str = "random_init", metrics: Sequence[str] = FLOOR_METRICS):
    """How far the best method sits above the ``floor`` variant: per metric, the floor's and the
    best variant's mean over seeds, which variant is best, and the gap (points). The paired
    intervals are :func:`comparison_table` ``(best, floor)``. ``values``: :func:`headline_values`."""
    import pandas as pd

    means = values.groupby(level="variant", sort=False)[list(metrics)].mean()
    rows = {}
    for metric in metrics:
        others = means[metric].drop(floor)
        best = others.idxmax()
        rows[metric] = {"untrained": means.loc[floor, metric], "best method": others[best],
                        "best is": best, "gap": others[best] - means.loc[floor, metric]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["untrained", "best method", "gap", "best is"])


#: What the hyperparameter search maximises: the mean of these validation metrics.
SEARCH_METRICS: tuple[str, ...] = ("knn joint", "linear joint")


def search_table(records: Sequence[Mapping[str, Any]]):
    """The search suite's candidates: their validation metrics (mean over seeds), the score
    (mean of :data:`SEARCH_METRICS`) and the number of seeds, best first."""
    values = headline_values(records)
    grouped = values.groupby(level="variant", sort=False)
    table = grouped[list(SEARCH_METRICS)].mean()
    table["score"] = table[list(SEARCH_METRICS)].mean(axis=1)
    table["seeds"] = grouped.size()
    return table.sort_values("score", ascending=False, kind="stable")


def search_choice(records: Sequence[Mapping[str, Any]]) -> str:
    """The candidate of the search with the best validation score (:func:`search_table`)."""
    benchmarks = {r["config"]["data"]["benchmark"] for r in records}
    if benchmarks != {"xsub_val"}:
        raise ValueError(f"a search is judged on the validation benchmark only, got {sorted(benchmarks)}")
    return str(search_table(records).index[0])


def search_differences(records: Sequence[Mapping[str, Any]], reference: str, confidence: float = 0.95):
    """Each candidate of the search against ``reference`` on the search's score (:func:`search_table`):
    the paired difference on each seed (columns ``"seed <k>"``), their mean and its ``confidence``
    Student-t interval (``low``, ``high``; with two seeds, ±12.7 standard errors wide). Rows in the
    order of :func:`search_table`, the reference left out."""
    values = headline_values(records)
    values = values.assign(score=values[list(SEARCH_METRICS)].mean(axis=1))
    if reference not in values.index.get_level_values("variant"):
        raise ValueError(f"search_differences: no runs of the reference {reference!r}")
    order = [v for v in search_table(records).index if v != reference]
    scores = values["score"].unstack("variant")                                  # seed x variant
    table = scores[order].sub(scores[reference], axis=0).T                       # variant x seed
    table.columns = [f"seed {s}" for s in table.columns]
    intervals = comparison_table(values, [(v, reference) for v in order], ["score"], confidence)
    for column in ("difference", "low", "high"):
        table[column] = intervals[column].to_numpy()
    table.index.name = f"candidate − {reference}"
    return table


# -- the noise budget --------------------------------------------------------------------
def noise_table(budget: Mapping[str, Any]):
    """Standard deviations (points) of one run by source, from a ``tools/noise_budget.py`` report:
    (a) pretraining seed, (b) evaluation seed with the weights fixed, (c) test-set sampling."""
    import math

    import pandas as pd

    rows = []
    groups = [(m, per) for m, per in budget["analysis"]["methods"].items()]
    pair = budget["analysis"].get("paired")
    if pair:
        groups.append((f"{pair['a']} − {pair['b']} (paired)", pair["metrics"]))
    for name, metrics in groups:
        for metric, c in metrics.items():
            rows.append({"method": name, "metric": metric.replace("_", " ").replace("semi1", "semi 1%"),
                         "mean": c["mean"], "(a) pretraining seed": math.sqrt(c["pretrain_var"]),
                         "(b) evaluation seed": math.sqrt(c["eval_var"]), "(c) test set": math.sqrt(c["test_var"]),
                         "one run (a+b)": c["run_sd"]})
    return pd.DataFrame(rows).set_index(["method", "metric"])


def paired_budget_table(budgets: Mapping[str, Mapping[str, Any]]):
    """Side by side, for the paired difference of several ``tools/noise_budget.py`` reports
    (``{name: report}``): the SD of one paired difference per headline metric (pretraining and
    evaluation seed together) and the seeds a 95 % t-interval of half-width 2 points needs."""
    import pandas as pd

    columns = {}
    for name, budget in budgets.items():
        pair = budget["analysis"]["paired"]
        for metric, c in pair["metrics"].items():
            label = metric.replace("_", " ").replace("semi1", "semi 1%")
            columns.setdefault((name, f"SD of one {pair['a']} − {pair['b']}"), {})[label] = c["sd_one_difference"]
            columns.setdefault((name, "seeds for ±2"), {})[label] = c["seeds_needed"]["2.0"]
    return pd.DataFrame(columns)


def testbed_table(summary: Mapping[str, Any]):
    """Random init against moco3 and CMD, per split and pretraining seed, from a ``tools/testbed.py``
    report (``summary.json``): joint-stream kNN (top-1, k = 1) and linear top-1 (%), and the gap of
    the better pretrained method over random init on each."""
    import pandas as pd

    rows = []
    for part, entry in summary["summary"].items():
        for r in entry["seeds"]:
            row: dict[str, Any] = {"split": f"{entry['benchmark']} ({part})", "seed": r["seed"]}
            for metric, name in (("knn_joint", "kNN"), ("linear_joint", "linear")):
                for variant in ("random_init", "moco3", "cmd"):
                    row[f"{variant} {name}"] = r[variant][metric]
                row[f"gap {name}"] = r[f"gap_{metric}"]
            rows.append(row)
    return pd.DataFrame(rows).set_index(["split", "seed"])


# -- the paper's claims ---------------------------------------------------------------------
#: Each claim of the CMD / I²MD papers as comparisons of the main suite (a better than b).
CLAIMS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("self-supervised pretraining beats an untrained encoder",
     (("moco_joint", "random_init"), ("moco3", "random_init"), ("cmd", "random_init"), ("i2md", "random_init"))),
    ("three streams beat one (joint) stream", (("moco3", "moco_joint"),)),
    ("CMD beats independent three-stream MoCo", (("cmd", "moco3"),)),
    ("CMD beats cross-modal positive mining", (("cmd", "posmining"),)),
    ("DNA improves CMD", (("cmd_dna", "cmd"),)),
    ("IMD improves CMD + DNA", (("i2md", "cmd_dna"),)),
    ("I²MD (CMD + DNA + IMD) beats CMD", (("i2md", "cmd"),)),
)


#: The multiple-comparison rule of :func:`claim_verdicts`: Holm's correction at this family-wise
#: error rate over all the paired tests of one claim (its comparisons x metrics).
CLAIM_ALPHA: float = 0.05


def claim_tests(values, metrics: Sequence[str] = HEADLINE_METRICS, claims=CLAIMS, alpha: float = CLAIM_ALPHA):
    """Every paired test behind :func:`claim_verdicts`: one row per (claim, comparison, metric) with
    the mean difference, its 95 % interval, the t-test's p-value (:func:`stats.t_test_p`), whether
    the interval alone excludes 0 (``uncorrected``) and whether Holm's correction at ``alpha`` over
    the claim's tests keeps it decided (``decided``; :func:`stats.holm`)."""
    import pandas as pd

    rows = []
    for claim, pairs in claims:
        tests = []
        for a, b in pairs:
            for metric in metrics:
                iv = paired(values, a, b, metric)
                if iv is not None:
                    tests.append({"claim": claim, "comparison": f"{a} − {b}", "metric": metric,
                                  "difference": iv.mean, "low": iv.low, "high": iv.high,
                                  "p": stats.t_test_p(iv), "uncorrected": iv.low > 0 or iv.high < 0})
        for test, kept in zip(tests, stats.holm([t["p"] for t in tests], alpha) if tests else []):
            rows.append({**test, "decided": kept})
    columns = ["claim", "comparison", "metric", "difference", "low", "high", "p", "uncorrected", "decided"]
    return pd.DataFrame(rows, columns=columns).set_index(["claim", "comparison", "metric"])


def _verdict(above: Sequence[str], below: Sequence[str], total: int) -> str:
    """``"supported on 1 of 4: knn joint"`` and the like (``mixed``: both directions)."""
    def part(word: str, names: Sequence[str]) -> str:
        listed = "" if len(names) == total else ": " + ", ".join(names)
        return f"{word} on {len(names)} of {total}{listed}"
    if not total:
        return "–"
    if above and below:
        return f"mixed: {part('supported', above)}; {part('contradicted', below)}"
    if above or below:
        return part("supported", above) if above else part("contradicted", below)
    return f"undecided on all {total}"


def claim_verdicts(values, metrics: Sequence[str] = HEADLINE_METRICS, claims=CLAIMS, alpha: float = CLAIM_ALPHA):
    """For each claim, on how many of its paired tests (comparisons x ``metrics``) the evidence
    decides it, and which way: ``"supported on 1 of 4: knn joint"``, ``"contradicted on ..."``,
    ``"mixed: ..."`` or ``"undecided on all 4"``. A test counts as decided when it survives Holm's
    correction at family-wise error ``alpha`` over the claim's tests (:func:`claim_tests`), so that
    the chance of calling any of a claim's tests decided by accident stays at most ``alpha``.
    ``uncorrected`` is the verdict that each 95 % interval alone would give."""
    import pandas as pd

    tests = claim_tests(values, metrics, claims, alpha)
    rows = []
    for claim, _ in claims:
        mine = tests.xs(claim, level="claim") if claim in tests.index.get_level_values("claim") else tests.iloc[:0]
        several = len({c for c, _ in mine.index}) > 1

        def names(flags) -> list[str]:
            return [f"{c}, {m}" if several else m for (c, m), r in mine[flags].iterrows()]

        up, down = mine["difference"] > 0, mine["difference"] < 0
        rows.append({"claim": claim,
                     "verdict": _verdict(names(mine["decided"] & up), names(mine["decided"] & down), len(mine)),
                     "decided above 0": int((mine["decided"] & up).sum()),
                     "decided below 0": int((mine["decided"] & down).sum()), "tests": len(mine),
                     "uncorrected": _verdict(names(mine["uncorrected"] & up), names(mine["uncorrected"] & down),
                                             len(mine))})
    return pd.DataFrame(rows).set_index("claim")


def claim_verdicts_by_seeds(records: Sequence[Mapping[str, Any]], counts: Sequence[int],
                            metrics: Sequence[str] = HEADLINE_METRICS, claims=CLAIMS, alpha: float = CLAIM_ALPHA):
    """The verdict of :func:`claim_verdicts` (Holm's correction at ``alpha``) recomputed on the first
    ``n`` seeds (:func:`first_seeds`) for each ``n`` of ``counts``: one row per claim, one column
    ``"<n> seeds"``."""
    import pandas as pd

    return pd.DataFrame({f"{n} seeds": claim_verdicts(headline_values(first_seeds(records, n)), metrics, claims,
                                                      alpha)["verdict"] for n in counts})


def _direction(row: Mapping[str, Any]) -> str:
    """One claim's row of :func:`claim_verdicts` as a direction: supported, contradicted, mixed,
    undecided, or ``not run`` (no paired test)."""
    if not row["tests"]:
        return "not run"
    up, down = row["decided above 0"], row["decided below 0"]
    if up and down:
        return "mixed"
    return "supported" if up else "contradicted" if down else "undecided"


#: How a claim's verdict on a second testbed stands to its verdict on the first.
AGREEMENT: dict[tuple[str, str], str] = {
    ("supported", "supported"): "holds", ("contradicted", "contradicted"): "holds",
    ("supported", "contradicted"): "reversed", ("contradicted", "supported"): "reversed",
    ("supported", "undecided"): "undecided on {second}", ("contradicted", "undecided"): "undecided on {second}",
    ("undecided", "supported"): "decided only on {second}", ("undecided", "contradicted"): "decided only on {second}",
    ("undecided", "undecided"): "undecided on both",
}


def claims_side_by_side(first, second, first_metrics: Sequence[str] = HEADLINE_METRICS,
                        second_metrics: Sequence[str] = HEADLINE_METRICS, names: tuple[str, str] = ("first", "second"),
                        claims=CLAIMS, alpha: float = CLAIM_ALPHA):
    """Each claim's :func:`claim_verdicts` on two testbeds (``first``, ``second``: their
    :func:`headline_values`, each with its own metrics) and how the second stands to the first:
    ``holds`` (decided the same way on both), ``reversed`` (decided opposite ways), ``undecided on
    the second``, ``decided only on the second``, ``undecided on both``, ``mixed`` (decided both ways
    on one testbed) or ``not run`` (a comparison missing on one). The agreement column names the
    second testbed (``names``)."""
    import pandas as pd

    a = claim_verdicts(first, first_metrics, claims, alpha)
    b = claim_verdicts(second, second_metrics, claims, alpha)
    rows = []
    for claim, _ in claims:
        da, db = _direction(a.loc[claim]), _direction(b.loc[claim])
        if "not run" in (da, db):
            mark = "not run"
        elif "mixed" in (da, db):
            mark = "mixed"
        else:
            mark = AGREEMENT[(da, db)].format(second=names[1])
        rows.append({"claim": claim, names[0]: a.loc[claim, "verdict"], names[1]: b.loc[claim, "verdict"],
                     f"on {names[1]}": mark})
    return pd.DataFrame(rows).set_index("claim")


# -- DNA at the end of training -----------------------------------------------------------------
def dna_end_of_training(records: Sequence[Mapping[str, Any]]):
    """Per variant (mean over seeds and modalities of the last epoch's log): DNA's neighbours
    per anchor, their coefficient of variation over anchors, their purity, and the purity of
    a fixed top-k of the same mean size."""
    import pandas as pd

    columns = {"neighbours": "dna_neighbors_", "count CV": "dna_count_cv_", "purity": "dna_purity_",
               "purity, fixed top-k of the same size": "dna_purity_topk_"}
    rows = []
    for r in records:
        log = r.get("last_epoch_log") or {}
        row = {"variant": r["variant"], "seed": r["seed"]}
        for name, prefix in columns.items():
            found = [v for k, v in log.items() if k.startswith(prefix) and not k.startswith(prefix + "topk")
                     and k.removeprefix(prefix) in ("joint", "motion", "bone")]
            row[name] = sum(found) / len(found) if found else float("nan")
        if any(pd.notna(row[c]) for c in columns):
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=list(columns))
    frame = pd.DataFrame(rows)
    return frame.groupby("variant", sort=False)[list(columns)].mean().assign(
        seeds=frame.groupby("variant", sort=False).size())


# -- streams that fail in pretraining -----------------------------------------------------------
def stream_failures(records: Sequence[Mapping[str, Any]], modality: str = "motion", drop: float = 10.0):
    """Runs whose ``modality`` stream failed: linear accuracy more than ``drop`` points under the
    median of the same variant's runs. Per failed run: its linear and kNN accuracy on the stream,
    the variant's median linear accuracy, the stream's InfoNCE loss over the last pretraining
    epoch (``last_epoch_log``) and the highest such loss among the variant's runs that did not
    fail. A failed stream whose loss tops all of theirs failed in pretraining, not in the
    evaluation."""
    import pandas as pd

    values = headline_values(records)
    linear, knn = f"linear {modality}", f"knn {modality}"
    if linear not in values:
        return pd.DataFrame()
    loss = pd.Series({(r["variant"], r["seed"]): (r.get("last_epoch_log") or {}).get(f"nce_{modality}", float("nan"))
                      for r in records}, dtype=float)
    loss.index.names = ["variant", "seed"]
    rows = []
    for variant, runs in values[linear].dropna().groupby(level="variant", sort=False):
        median = runs.median()
        failed = [seed for (_, seed), accuracy in runs.items() if accuracy < median - drop]
        healthy = loss.loc[variant].drop(failed, errors="ignore")
        for seed in failed:
            rows.append({"variant": variant, "seed": seed, linear: runs.loc[(variant, seed)],
                         f"median {linear}": median, knn: values.loc[(variant, seed), knn],
                         f"InfoNCE {modality}, last epoch": loss.get((variant, seed), float("nan")),
                         "highest of the healthy runs": healthy.max()})
    return pd.DataFrame(rows).set_index(["variant", "seed"]) if rows else pd.DataFrame(rows)


def stream_checks(records: Sequence[Mapping[str, Any]]):
    """The failed-stream detector (``diagnostics.failed_streams``) on every run: one row per
    (variant, seed) with each stream's InfoNCE gain over the last epoch as a share of the median
    gain of that stream among the variant's runs, and the streams that failed (a pandas DataFrame;
    runs without a last-epoch log, such as random init, are left out)."""
    import pandas as pd

    from .diagnostics import failed_streams, gain_shares, infonce_gains

    gains: dict[str, dict[tuple[int, str], float]] = {}
    for r in records:
        log = r.get("last_epoch_log") or {}
        nce = {key[4:]: value for key, value in log.items() if key.startswith("nce_")}
        for stream, gain in infonce_gains(nce, int(r["config"]["pretrain"]["queue_size"])).items():
            gains.setdefault(r["variant"], {})[(r["seed"], stream)] = gain
    rows = []
    for variant, runs in gains.items():
        failed, shares = failed_streams(runs), gain_shares(runs)
        for seed in sorted({seed for seed, _ in runs}):
            streams = [s for (sd, s) in runs if sd == seed]
            rows.append({"variant": variant, "seed": seed,
                         **{f"share {s}": shares[(seed, s)] for s in streams},
                         "failed": " ".join(s for s in streams if (seed, s) in failed)})
    frame = pd.DataFrame(rows)
    return frame.set_index(["variant", "seed"]) if rows else frame


def failure_counts(records: Sequence[Mapping[str, Any]]):
    """Per variant: runs checked and runs with at least one failed stream (:func:`stream_checks`)."""
    checks = stream_checks(records)
    if checks.empty:
        return checks
    failed = checks["failed"] != ""
    return failed.groupby(level="variant", sort=False).agg(runs="size", failed="sum")
