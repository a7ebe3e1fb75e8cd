"""Re-run the run behind one result file and compare the numbers: does a committed result come back?

A result file (``results/<profile>/<suite>/<variant>/seed<k>.json``, :mod:`.experiments`) holds the
whole config of its run, the commit and the hardware that made it. :func:`reproduce` rebuilds that
config, pretrains it from scratch in a fresh folder, evaluates it with the same protocols and
compares every accuracy and the last training-log row with the file's.

On the same code and the same CPU kernels a run is deterministic, so a faithful re-run gives the
same numbers bit for bit. Floating-point sums are rounded differently by other kernels (another
instruction set, see ``hardware["cpu_capability"]``, or another BLAS), and training amplifies such
differences like a change of seed would: a re-run on another machine is a new sample of the run,
not a check of it. The same holds for the encoder's time-stepping path (``encoder.recurrence``,
whose ``auto`` picks a path by size and device, and picked ``fused`` on a CPU only from that
path's commit on): a re-run takes the path the file records (:func:`recorded_recurrence_path`),
so a result made before a faster path came still comes back bit for bit.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

#: Which evaluation protocol produced a metric row (``protocol`` field of a result file).
PROTOCOL_OF_ROW = {"knn": "knn", "linear": "linear", "linear_fast": "linear", "semi": "semi"}
#: Fields of a metric row that identify it; the accuracies are the fields starting with ``top``.
ROW_KEYS = ("protocol", "modality", "fraction")


def row_id(row: Mapping[str, Any]) -> str:
    """``"knn joint"``, ``"semi joint 0.01"``: the name of one metric row of a result file."""
    return " ".join(str(row[k]) for k in ROW_KEYS if row.get(k) is not None)


def accuracies(metrics: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Every accuracy of a result file's metric rows, as ``{"<row> <field>": value}``."""
    return {f"{row_id(row)} {key}": float(value) for row in metrics for key, value in row.items()
            if key.startswith("top") and isinstance(value, (int, float))}


def compare(then: Mapping[str, float], now: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per name in ``then`` or ``now``: both values and ``now - then`` (NaN when one
    side lacks the name)."""
    rows = []
    for name in list(dict.fromkeys([*then, *now])):
        a, b = then.get(name, math.nan), now.get(name, math.nan)
        rows.append({"name": name, "then": a, "now": b, "difference": b - a})
    return rows


def same(row: Mapping[str, Any]) -> bool:
    """Whether one compared value came back exactly (NaN on both sides counts as equal)."""
    return row["then"] == row["now"] or (math.isnan(row["then"]) and math.isnan(row["now"]))


def identical(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every compared value came back exactly (:func:`same`)."""
    return all(same(r) for r in rows)


def recorded_recurrence_path(record: Mapping[str, Any]) -> str | None:
    """The time-stepping path the run of a result file took (``None``: an encoder without one).

    Files record it (``recurrence_path``) since the ``fused`` path came; before, ``auto`` took
    ``loop`` where it takes ``fused`` or ``fused_c`` today, which is what older files get.
    """
    from .models.encoders import resolve_recurrence

    if "recurrence_path" in record:
        return record["recurrence_path"]
    encoder = record["config"].get("encoder", {})
    if encoder.get("kind", "bigru_cmd") != "bigru_cmd":
        return None
    chosen = encoder.get("recurrence", "auto")
    device_type = "cuda" if (record.get("hardware") or {}).get("cuda") else "cpu"
    path = resolve_recurrence(chosen, int(encoder.get("hidden_size", 1024)), device_type)
    return "loop" if chosen == "auto" and path in ("fused", "fused_c") else path


def reproduce(result_file: str | Path, runs_root: str | Path | None = None) -> dict[str, Any]:
    """Pretrain and evaluate again the run of ``result_file`` and compare.

    The config comes from the file, not from today's suites; it must be the config the file's
    ``config_digest`` was made from (else ``ValueError`` naming the file), and fields the library
    added since take the values such runs used (:meth:`ExperimentConfig.from_dict`). Pretraining starts
    from scratch in a fresh folder under ``runs_root`` (a temporary folder by default), so no
    checkpoint of the original run is reused.

    The re-run steps through time on the path the file records (:func:`recorded_recurrence_path`).

    Returns ``{"result_file", "then": {commit, dirty, hardware, created}, "now": {...}, "recurrence_path",
    "recurrence_path_now" (the path the re-run took: the recorded one unless this machine lacks it),
    "metrics": [rows of compare], "final_log_row": [rows of compare], "identical": bool}``.
    """
    import torch

    from .config import ExperimentConfig, config_digest
    from .experiments import git_commit, hardware, load_record, recurrence_path
    from .pipeline import evaluate_model, pretrained_model

    path = Path(result_file)
    record = load_record(path)
    try:
        cfg = ExperimentConfig.from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its config cannot be rebuilt with this code ({e})") from e
    stored = config_digest(record["config"])
    if record.get("config_digest") and stored != record["config_digest"]:
        raise ValueError(f"{path}: its config has digest {stored}, the file "
                         f"records {record['config_digest']}; the config was changed after the run")
    protocols = tuple(dict.fromkeys(PROTOCOL_OF_ROW[row["protocol"]] for row in record["metrics"]
                                    if row.get("protocol") in PROTOCOL_OF_ROW))
    trained = "pretraining" in record or bool(record.get("final_log_row"))
    path_then = recorded_recurrence_path(record)
    if path_then is not None and path_then != recurrence_path(cfg):
        cfg = cfg.replace({"encoder.recurrence": path_then})    # the path the run took, not today's auto
    path_now = recurrence_path(cfg)       # differs only where this machine lacks it (fused_c without a compiler)
    code = git_commit()                   # the code that runs, before it runs
    threads, before = (record.get("hardware") or {}).get("torch_threads"), torch.get_num_threads()
    if runs_root is not None:
        Path(runs_root).mkdir(parents=True, exist_ok=True)
    try:
        if threads:                       # reductions split over threads round differently
            torch.set_num_threads(int(threads))
        with tempfile.TemporaryDirectory(dir=runs_root) as folder:
            model, history = pretrained_model(cfg, Path(folder) / "run" if trained else None)
            metrics = evaluate_model(model, cfg, protocols)
            now_hardware = hardware()
    finally:
        torch.set_num_threads(before)
    final = {k: float(v) for k, v in (history[-1] if history else {}).items()}
    then_final = {k: float(v) for k, v in (record.get("final_log_row") or {}).items()}
    metric_rows, log_rows = compare(accuracies(record["metrics"]), accuracies(metrics)), compare(then_final, final)
    return {
        "result_file": str(path),
        "then": {"commit": record.get("commit"), "dirty": record.get("dirty"),
                 "hardware": record.get("hardware"), "created": record.get("created")},
        "now": {**code, "hardware": now_hardware},
        "recurrence_path": path_then, "recurrence_path_now": path_now,
        "protocols": list(protocols),
        "metrics": metric_rows, "final_log_row": log_rows,
        "identical": identical(metric_rows) and identical(log_rows),
    }


def _paths_clause(report: Mapping[str, Any]) -> str:
    """``", both on the X path"``, or which path each run took where they differ ("" without one)."""
    then, now = report.get("recurrence_path"), report.get("recurrence_path_now", report.get("recurrence_path"))
    if not then:
        return ""
    if now == then:
        return f", both on the {then} path"
    return (f", made on the {then} path and re-run on the {now} path (this machine lacks {then}: "
            "a new sample, not a check)")


def summary_lines(report: Mapping[str, Any], limit: int = 12) -> list[str]:
    """A short text account of :func:`reproduce`'s report: the verdict and the largest differences."""
    rows = [r for r in [*report["metrics"], *report["final_log_row"]] if not same(r)]
    lines = [f"{report['result_file']}: made at {str(report['then']['commit'])[:10]}, "
             f"re-run at {str(report['now']['commit'])[:10]}"
             + _paths_clause(report)]
    if report["identical"]:
        lines.append(f"identical bit for bit: {len(report['metrics'])} accuracies and "
                     f"{len(report['final_log_row'])} columns of the last log row")
        return lines
    lines.append(f"{len(rows)} of {len(report['metrics']) + len(report['final_log_row'])} values differ; "
                 "the largest differences:")
    rows.sort(key=lambda r: -abs(r["difference"]) if not math.isnan(r["difference"]) else -math.inf)
    lines += [f"  {r['name']:40s} then {r['then']:10.4f}  now {r['now']:10.4f}  ({r['difference']:+.4f})"
              for r in rows[:limit]]
    return lines


def reproduction_table(reports: Sequence[Mapping[str, Any]],
                       accuracies_shown: Sequence[str] = ("knn joint top1@k=1",)):
    """One row per :func:`reproduce` report: the file, where and when it was made and re-run
    (commit, date, the kernels' instruction set), how many values came back exactly, and each
    accuracy of ``accuracies_shown`` then and now (NaN where the run has no such number)."""
    import pandas as pd

    def kernels(side: Mapping[str, Any]) -> str:
        hw = side.get("hardware") or {}
        env = ", ".join(f"{k}={v}" for k, v in (hw.get("kernel_env") or {}).items())
        return (hw.get("cpu_capability") or "not recorded") + (f" ({env})" if env else "")

    rows = []
    for rep in reports:
        values = [*rep["metrics"], *rep["final_log_row"]]
        by_name = {r["name"]: r for r in rep["metrics"]}
        row = {"result file": "/".join(Path(rep["result_file"]).parts[-2:]),
               "made at": f"{str(rep['then']['commit'])[:7]}, {str(rep['then']['created'])[:10]}",
               "made with": kernels(rep["then"]),
               "re-run at": str(rep["now"]["commit"])[:7], "re-run with": kernels(rep["now"]),
               "values equal": f"{sum(map(same, values))} of {len(values)}"}
        for name in accuracies_shown:
            found = by_name.get(name)
            row[f"{name}, then"] = found["then"] if found else math.nan
            row[f"{name}, now"] = found["now"] if found else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
