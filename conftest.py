"""Root pytest configuration.

* Tests and notebooks run at the ``smoke`` scale: kernels started by nbval inherit
  this environment, so chapter notebooks read ``I2MD_PROFILE=smoke`` too.
* Every pytest process (each xdist worker) writes experiment runs and result files
  into fresh folders of its own (``I2MD_RUNS_DIR``/``I2MD_RESULTS_DIR``): notebooks
  in two workers never train the same run folder at once, and CI re-runs the whole
  smoke pipeline instead of reading leftovers.
* Committed notebooks carry no execution counts (clean diffs); the only outputs they
  keep are the reference outputs of ``# NBVAL_CHECK_OUTPUT`` cells
  (``tools/nbclean.py``). nbval treats a cell without an execution count as never
  run and refuses stored outputs on it, so at collection time such cells are
  marked as run.
"""
import os
import tempfile

os.environ.setdefault("I2MD_PROFILE", "smoke")
if "I2MD_RUNS_DIR" not in os.environ:
    _scratch = tempfile.mkdtemp(prefix=f"i2md-tests-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
    os.environ["I2MD_RUNS_DIR"] = os.path.join(_scratch, "runs")
    os.environ["I2MD_RESULTS_DIR"] = os.path.join(_scratch, "results")


def _treat_reference_outputs_as_run() -> None:
    try:
        from nbval import plugin
    except ImportError:   # nbval not installed: no notebooks are collected anyway
        return
    original = plugin.IPyNbFile.collect
    if getattr(original, "_i2md_wrapped", False):
        return

    def collect(self):
        for item in original(self):
            cell = getattr(item, "cell", None)
            if cell is not None and cell.get("outputs") and cell.get("execution_count") is None:
                cell["execution_count"] = 1
            yield item

    collect._i2md_wrapped = True
    plugin.IPyNbFile.collect = collect


_treat_reference_outputs_as_run()
