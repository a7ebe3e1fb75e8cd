"""The built book, checked as a reader sees it: built at smoke scale, opened in headless Chromium.

One build per run (module fixture): a copy of the working tree (the files git tracks or
would track) is built with ``jupyter-book build -W -n --keep-going`` into a temporary
folder, so neither the repository's ``_build/.jupyter_cache`` (book-scale outputs) nor
its ``runs/`` and ``results/`` are read or written. The HTML is served on 127.0.0.1
and opened in headless Chromium with every other host unresolvable, so any page that
needs the network shows up as a failed load.

Checks: the build succeeds without warnings; every page of the table of contents
exists; every local ``href``/``src`` (and ``#anchor``) of every page resolves; no page
loads scripts, styles or images from another host; in the browser, every plotly
figure renders (an ``svg.main-svg`` or ``canvas``), every image decodes, math is
typeset by the local MathJax without TeX errors, solutions are collapsed, and no
script raises. Pages fit their column: no output, code cell, table or figure is wider than
the article column unless it scrolls inside its own box, and nothing is cut off; text in
outputs, tables and plotly figures is at least MIN_TEXT_PX; a matplotlib picture is not shrunk
so far that its text falls below MIN_TEXT_PX; plotly panel titles do not overlap and legends do
not scroll. A screenshot of one chapter is saved for inspection.

Needs ``/usr/bin/chromium`` (``make browser`` installs it; ``$CHROMIUM`` overrides).
"""
from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
from mathjax_offline import mathjax_folder  # noqa: E402

pytestmark = pytest.mark.reader

BUILD_TIMEOUT_S = 1800
BROWSER_TIMEOUT_S = 240
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "_build", "runs", "cache", ".pytest_cache",
                                     "__pycache__", "*.egg-info", ".ipynb_checkpoints")
LOCAL_MATHJAX = mathjax_folder() is not None
MIN_TEXT_PX = 9.0            # smallest readable text, in CSS pixels, in outputs, tables and figures
WIDTHS = (1280, 1024)        # viewport widths, in CSS pixels: a desktop window and a laptop's


# -- building and serving --------------------------------------------------------------------------
def working_tree_files(root: Path) -> list[Path]:
    """Files git tracks or would track (not ignored), relative to ``root``; [] without git."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [Path(p) for p in out.decode().split("\0") if p and (root / p).is_file()]


def copy_working_tree(root: Path, target: Path) -> None:
    files = working_tree_files(root)
    if not files:   # not a git checkout: copy all but the usual generated folders
        shutil.copytree(root, target, ignore=COPY_IGNORE)
        return
    for rel in files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target / rel)


def jupyter_book_command() -> str:
    beside_python = Path(sys.executable).parent / "jupyter-book"
    found = str(beside_python) if beside_python.exists() else shutil.which("jupyter-book")
    if not found:
        pytest.fail("jupyter-book is not installed (make install)")
    return found


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Build the book at smoke scale from a copy of the working tree; returns a dict of facts.

    ``$I2MD_READER_BUILD`` names the folder of an earlier run (holding ``source/``,
    ``output/`` and ``build.log``) to check again without building: for iterating on the
    layout (copy a changed ``_static/book.css`` into its ``output/_build/html/_static``).
    """
    if os.environ.get("I2MD_READER_BUILD"):
        return earlier_build(Path(os.environ["I2MD_READER_BUILD"]))
    work = tmp_path_factory.mktemp("reader")
    source, output = work / "source", work / "output"
    copy_working_tree(ROOT, source)
    env = dict(os.environ, I2MD_PROFILE="smoke", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    start = time.perf_counter()
    done = subprocess.run([jupyter_book_command(), "build", str(source), "--path-output", str(output),
                           "-W", "-n", "--keep-going"],
                          env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    seconds = time.perf_counter() - start
    log = done.stdout + done.stderr
    (work / "build.log").write_text(log)
    print(f"\nbook built at smoke scale in {seconds:.0f} s (log: {work / 'build.log'})")
    html_dir = output / "_build" / "html"
    if not (html_dir / "index.html").exists():
        pytest.fail(f"the build produced no HTML (exit {done.returncode}):\n{log[-6000:]}")
    return {"returncode": done.returncode, "log": log, "html": html_dir, "seconds": seconds,
            "source": source}


def earlier_build(work: Path) -> dict:
    """The facts of a build that an earlier run left in ``work`` (see ``build``)."""
    html_dir = work / "output" / "_build" / "html"
    if not (html_dir / "index.html").is_file() or not (work / "build.log").is_file():
        pytest.fail(f"$I2MD_READER_BUILD={work}: no output/_build/html/index.html or build.log there")
    log = (work / "build.log").read_text()
    print(f"\nreusing the book built in {work} (no build)")
    return {"returncode": 1 if "build succeeded" not in log else 0, "log": log, "html": html_dir,
            "seconds": 0.0, "source": work / "source"}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path):
    """Serve ``folder`` on http://127.0.0.1:<free port>/ from a thread; returns (url, stop)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    return f"http://127.0.0.1:{httpd.server_address[1]}", stop


@pytest.fixture(scope="module")
def server(build):
    """The built HTML on http://127.0.0.1:<free port>/ (a thread; stopped after the module)."""
    url, stop = serve(build["html"])
    yield url
    stop()


def toc_pages(source: Path) -> list[str]:
    """The documents of ``_toc.yml`` (root first), as paths without suffix."""
    toc = yaml.safe_load((source / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", p) for p in pages]


def chapter_pages(build) -> list[str]:
    return [p for p in toc_pages(build["source"]) if Path(p).name.startswith("ch")]


def built_pages(build) -> list[Path]:
    """Every HTML page of the build (not the probe copies the browser check adds)."""
    return sorted(p for p in build["html"].rglob("*.html") if "_static" not in p.parts
                  and not p.name.endswith(PROBE_SUFFIX) and p.name != HARNESS)


# -- static checks of the HTML ------------------------------------------------------------------------
class _LinkParser(HTMLParser):
    """Collects ``(tag, attribute, value)`` of every link-like attribute and every element id."""

    LINK_ATTRS = {"href", "src", "data", "poster"}

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in self.LINK_ATTRS and value is not None:
                self.links.append((tag, name, value))
            elif name == "srcset" and value:
                self.links += [(tag, name, item.split()[0]) for item in value.split(",") if item.strip()]
            if name in ("id", "name") and value:
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def parse_page(path: Path) -> _LinkParser:
    parser = _LinkParser()
    parser.feed(path.read_text(errors="replace"))
    return parser


def is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme and parts.scheme not in ("file",)) or url.startswith("//")


def test_book_builds_without_warnings(build):
    warnings = [line for line in build["log"].splitlines() if re.search(r"WARNING|ERROR", line)
                and "Kernel is running over TCP" not in line]
    assert build["returncode"] == 0, "jupyter-book build -W failed:\n" + "\n".join(warnings[:40] or
                                                                                  [build["log"][-4000:]])


def test_every_page_of_the_table_of_contents_is_built(build):
    missing = [p for p in toc_pages(build["source"]) if not (build["html"] / f"{p}.html").is_file()]
    assert not missing, f"pages of _toc.yml without HTML: {missing}"
    assert chapter_pages(build), "no chapters in _toc.yml"


def test_no_broken_local_links(build):
    html_dir = build["html"]
    broken = []
    for page in built_pages(build):
        for tag, attr, url in parse_page(page).links:
            if is_external(url) or url.startswith(("mailto:", "data:", "javascript:", "about:")):
                continue
            parts = urlsplit(url)
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(html_dir)}: <{tag} {attr}={url!r}>"
            if not target.is_file():
                broken.append(f"{where}: no file {target}")
            elif parts.fragment and target.suffix == ".html" and \
                    unquote(parts.fragment) not in parse_page(target).ids:
                broken.append(f"{where}: no element with id {parts.fragment!r}")
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken[:40])


def test_pages_load_nothing_from_other_hosts(build):
    """Scripts, styles, images and frames all come from the book (links to click may point out)."""
    remote = []
    for page in built_pages(build):
        for tag, attr, url in parse_page(page).links:
            if tag == "a" or not is_external(url):
                continue
            if tag == "link" and attr == "href" and not _is_resource_link(page, url):
                continue
            if not LOCAL_MATHJAX and "mathjax" in url.lower():
                continue   # reported by test_math_is_rendered_locally
            remote.append(f"{page.relative_to(build['html'])}: <{tag} {attr}={url}>")
    assert not remote, "pages need the network:\n" + "\n".join(sorted(set(remote))[:40])


def _is_resource_link(page: Path, url: str) -> bool:
    text = page.read_text(errors="replace")
    for match in re.finditer(r"<link\b[^>]*>", text):
        if url in match.group(0):
            rel = re.search(r'rel="([^"]*)"', match.group(0))
            if rel and set(rel.group(1).split()) & {"stylesheet", "preload", "icon", "modulepreload"}:
                return True
    return False


# -- in the browser ----------------------------------------------------------------------------------
def chromium_binary() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("headless Chromium is missing: run `make browser` (Debian package chromium)")


def chromium(args: list[str], profile: Path, timeout: int = BROWSER_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run headless Chromium offline: a fresh profile, and every host but 127.0.0.1 unresolvable."""
    command = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
               "--enable-unsafe-swiftshader",   # software WebGL for plotly's 3D figures
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


# Injected at the top of <head> of a copy of each page: records failed loads and script errors.
PROBE_HEAD = """<script>
window.__reader = {failed_loads: [], script_errors: []};
window.addEventListener("error", function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) { window.__reader.failed_loads.push(t.src || t.href); }
  else { window.__reader.script_errors.push(String(e.message || e)); }
}, true);
window.addEventListener("unhandledrejection", function (e) {
  window.__reader.script_errors.push("unhandled rejection: " + String(e.reason));
});
</script>"""

# Part of PROBE_BODY: how the article column holds what it shows. ``readerLayout(document)``
# returns the column width and lists (each entry names the element and its first words):
# ``wide`` -- an output, table, picture or block of text (an exercise, say) that the reader sees
# cut: it reaches past the column, or its content needs a sideways scroll in its box, whatever
# its CSS says (a box that scrolls inside itself counts: a reader does not scroll sideways to
# find a number); ``code_cut`` -- each line of code (a code cell or a literal block) longer than
# its box shows, with ``code_columns`` the fewest characters a code box on the page shows;
# ``small_text`` -- visible text of outputs, tables and plotly figures set below MIN_TEXT_PX;
# ``images`` -- every picture's natural and displayed width (the test turns these into the
# displayed size of the picture's text); ``overlaps`` -- plotly panel titles that overlap;
# ``legend_scrolls`` -- plotly legends that need their own scroll bar.
LAYOUT_PROBE = r"""
function readerLayout(d) {
  var article = d.querySelector("article.bd-article") || d.querySelector("main article") || d.querySelector("main");
  var out = {column: 0, page_scrolls_sideways: false, wide: [], code_cut: [], code_columns: 0, small_text: [],
             images: [], overlaps: [], legend_scrolls: []};
  if (!article) { return out; }
  var acs = getComputedStyle(article), abox = article.getBoundingClientRect();
  var left = abox.left + parseFloat(acs.paddingLeft), right = abox.right - parseFloat(acs.paddingRight);
  out.column = Math.round(right - left);
  var root = d.scrollingElement || d.documentElement;
  out.page_scrolls_sideways = root.scrollWidth > root.clientWidth + 1;
  function words(el) {
    var t = (el.textContent || "").replace(/\s+/g, " ").trim();
    return t ? t.slice(0, 60) : (el.getAttribute("src") || el.id || "");
  }
  function name(el) {
    var cls = typeof el.className === "string" && el.className ? "." + el.className.trim().split(/\s+/).join(".") : "";
    return el.tagName.toLowerCase() + cls + " \u2014 " + words(el);
  }
  function clipsOrScrolls(el) { return !/visible/.test(getComputedStyle(el).overflowX); }
  function isCode(el) {                 // source code: a code cell's input or a literal block in the text
    return !el.closest(".cell_output") && (el.matches(".cell_input, div.highlight, pre") ||
                                           !!el.closest("div.highlight, .cell_input"));
  }
  function seen_right(el) {             // how far right the reader sees el's content: clipping boxes cut it
    var edge = right;
    for (var e = el; e && e !== article; e = e.parentElement) {
      if (clipsOrScrolls(e)) { edge = Math.min(edge, e.getBoundingClientRect().right); }
    }
    return edge;
  }
  // Outputs, tables, pictures and blocks of text: a box whose content needs a sideways scroll,
  // or that reaches past the column, is cut, whatever its CSS says (a scrolling box counts).
  var wide = [];
  article.querySelectorAll(".cell_output, .output, pre, table, img, .plotly-graph-div, .admonition, " +
                           "p, li, dl, blockquote")
    .forEach(function (el) {
      if (isCode(el)) { return; }
      var box = el.getBoundingClientRect();
      if (!box.width || !box.height) { return; }
      var problem = null, hidden = el.scrollWidth - el.clientWidth;
      if (box.right > right + 1) { problem = "wider than the column by " + Math.round(box.right - right) + " px"; }
      else if (clipsOrScrolls(el) && hidden > 1) {
        problem = "needs a sideways scroll (" + Math.round(hidden) + " px hidden)"; }
      else if (box.left + el.scrollWidth > seen_right(el) + 1) {
        problem = "reaches " + Math.round(box.left + el.scrollWidth - seen_right(el)) + " px past what is seen"; }
      if (problem) { wide.push([el, problem]); }
    });
  out.wide = wide.filter(function (w) {       // name the innermost element, not each of its boxes
    return !wide.some(function (v) { return v[0] !== w[0] && w[0].contains(v[0]); });
  }).map(function (w) { return w[1] + ": " + name(w[0]); });
  // Code: each line longer than what its box shows without a sideways scroll.
  article.querySelectorAll("pre").forEach(function (pre) {
    if (!isCode(pre)) { return; }
    var box = pre.getBoundingClientRect();
    if (!box.width || !box.height) { return; }
    var cs = getComputedStyle(pre), probe = d.createElement("span");
    probe.textContent = "0000000000";
    pre.appendChild(probe);
    var ch = probe.getBoundingClientRect().width / 10;
    pre.removeChild(probe);
    var shown = Math.min(seen_right(pre), box.right) - box.left - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight)
                - parseFloat(cs.borderLeftWidth);
    var fits = Math.floor((shown + 0.5) / ch);
    out.code_columns = out.code_columns ? Math.min(out.code_columns, fits) : fits;
    pre.textContent.replace(/\n$/, "").split("\n").forEach(function (line) {
      if (line.length > fits) { out.code_cut.push({line: line.trim().slice(0, 60), chars: line.length, fits: fits}); }
    });
  });
  var walker = d.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  var small = {};
  for (var node = walker.nextNode(); node; node = walker.nextNode()) {
    var el = node.parentElement;
    if (!node.textContent.trim() || !el.closest(".cell_output, table, .plotly-graph-div")) { continue; }
    if (el.closest(".hoverlayer, .modebar-container, mjx-assistive-mml")) { continue; }
    var box = el.getBoundingClientRect(), px = parseFloat(getComputedStyle(el).fontSize);
    if (!box.width || !box.height || getComputedStyle(el).visibility === "hidden") { continue; }
    if (px < MIN_TEXT_PX) { small[px.toFixed(1) + " px: " + words(el)] = true; }
  }
  out.small_text = Object.keys(small);
  article.querySelectorAll("img").forEach(function (img) {
    var box = img.getBoundingClientRect();
    if (box.width) { out.images.push({src: img.getAttribute("src"), natural: img.naturalWidth,
                                      shown: box.width}); }
  });
  article.querySelectorAll(".plotly-graph-div").forEach(function (plot, p) {
    var titles = Array.from(plot.querySelectorAll("g.annotation")).map(function (a) {
      return [a.getBoundingClientRect(), words(a)]; }).filter(function (t) { return t[0].width > 0; });
    for (var i = 0; i < titles.length; i++) {
      for (var j = i + 1; j < titles.length; j++) {
        var a = titles[i][0], b = titles[j][0];
        if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) {
          out.overlaps.push("figure " + (p + 1) + ": '" + titles[i][1] + "' and '" + titles[j][1] + "'");
        }
      }
    }
    plot.querySelectorAll("g.legend rect.scrollbar").forEach(function (bar) {
      if (bar.getBoundingClientRect().height > 0) {
        out.legend_scrolls.push("figure " + (p + 1) + ": " + words(plot.querySelector("g.legend")).slice(0, 50));
      }
    });
  });
  return out;
}
"""

# Injected before </body>: after load (and MathJax's typesetting), what the reader would see.
PROBE_BODY = ("""<script>
var MIN_TEXT_PX = %MIN_TEXT_PX%;
""" + LAYOUT_PROBE + """
window.addEventListener("load", function () {
  function report() {
    var r = window.__reader, d = document, all = function (s) { return Array.from(d.querySelectorAll(s)); };
    var plots = all(".plotly-graph-div");
    r.plots = plots.length;
    r.plots_rendered = plots.filter(function (p) {
      return p.querySelector("svg.main-svg, canvas") && !/WebGL is not supported/i.test(p.textContent);
    }).length;
    var images = all("article img, main img");
    r.images = images.length;
    r.images_broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                            .map(function (i) { return i.getAttribute("src"); });
    r.tables = all("article table, main table").length;
    r.math = all(".math").length;
    r.math_rendered = all(".math mjx-container, mjx-container.MathJax").length;
    r.math_errors = all("mjx-merror").map(function (e) { return e.getAttribute("data-mjx-error"); })
      .concat(all("mjx-mtext[style*='color: red'] > mjx-c.mjx-c5C:first-child").map(function () {
        return "undefined control sequence"; }));
    var solutions = all(".admonition").filter(function (a) {
      var t = a.querySelector(".admonition-title"); return t && /^\\s*solution/i.test(t.textContent); });
    r.solutions = solutions.length;
    r.solutions_shown = solutions.filter(function (a) {
      return Array.from(a.children).some(function (c) {
        return !c.classList.contains("admonition-title") && getComputedStyle(c).visibility !== "hidden"
          && c.getBoundingClientRect().height > 0; });
    }).map(function (a) { return a.querySelector(".admonition-title").textContent.trim(); });
    r.layout = readerLayout(d);
    var out = parent.document.getElementById(window.name);
    if (out) { out.textContent = JSON.stringify(r); }
  }
  setTimeout(function () {
    var mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise) { mj.startup.promise.then(report, report); } else { report(); }
  }, 1500);
});
</script>""").replace("%MIN_TEXT_PX%", str(MIN_TEXT_PX))

PROBE_SUFFIX = ".reader-probe.html"
HARNESS = "reader-harness.html"


def write_probes(html_dir: Path, pages: list[str], width: int) -> str:
    """Probe copies of ``pages`` and a harness page that frames them all, each frame ``width``
    CSS pixels wide (the page's viewport); returns the harness name."""
    frames = []
    for i, page in enumerate(pages):
        text = (html_dir / f"{page}.html").read_text()
        text = text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "</body>", 1)
        (html_dir / f"{page}{PROBE_SUFFIX}").write_text(text)
        frames.append(f'<pre id="result-{i}"></pre>'
                      f'<iframe name="result-{i}" src="{page}{PROBE_SUFFIX}" width="{width}" height="900" '
                      f'style="border: 0"></iframe>')
    (html_dir / HARNESS).write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body style='margin: 0'>"
        + "\n".join(frames) + "</body></html>")
    return HARNESS


def probe_pages(html_dir: Path, pages: list[str], url: str, profile: Path,
                width: int = 1280) -> dict[str, dict | None]:
    """Open probe copies of ``pages`` (served from ``html_dir`` at ``url``) in one Chromium run,
    each in a viewport ``width`` CSS pixels wide; page -> what its probe reported (None if it
    never reported)."""
    harness = write_probes(html_dir, pages, width)
    done = chromium(["--virtual-time-budget=60000", f"--window-size={width + 40},1000", "--dump-dom",
                     f"{url}/{harness}"], profile)
    results = {}
    for i, page in enumerate(pages):
        match = re.search(rf'<pre id="result-{i}">(.*?)</pre>', done.stdout, re.S)
        results[page] = json.loads(html.unescape(match.group(1))) if match and match.group(1) else None
    if not any(results.values()):
        pytest.fail(f"Chromium reported nothing (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return results


@pytest.fixture(scope="module")
def seen_by_reader(build, server, tmp_path_factory) -> dict[str, dict]:
    """What every page of the book shows in Chromium at 1280 px after its scripts ran: page -> facts."""
    pages = toc_pages(build["source"])
    start = time.perf_counter()
    results = probe_pages(build["html"], pages, server, tmp_path_factory.mktemp("chromium-profile"))
    print(f"\nChromium checked {len(pages)} pages in {time.perf_counter() - start:.1f} s")
    for page, seen in results.items():
        if seen:
            print(f"  {page}: {seen['plots_rendered']}/{seen['plots']} plotly figures, "
                  f"{seen['images']} images, {seen['tables']} tables, "
                  f"{seen['math_rendered']}/{seen['math']} formulas typeset, {seen['solutions']} solutions")
    return results


@pytest.fixture(scope="module")
def layouts(seen_by_reader, build, server, tmp_path_factory) -> dict[int, dict[str, dict]]:
    """The layout of every page at each of WIDTHS: width -> page -> ``readerLayout`` facts."""
    by_width = {WIDTHS[0]: {p: s["layout"] for p, s in seen_by_reader.items() if s}}
    for width in WIDTHS[1:]:
        seen = probe_pages(build["html"], toc_pages(build["source"]), server,
                           tmp_path_factory.mktemp("chromium-profile"), width)
        by_width[width] = {p: s["layout"] for p, s in seen.items() if s}
    for width, pages in by_width.items():
        print(f"\nat {width} px:")
        for page, layout in pages.items():
            print(f"  {page}: column {layout['column']} px, code boxes show {layout['code_columns']} "
                  f"characters; {len(layout['wide'])} cut outputs/tables/blocks, "
                  f"{len(layout['code_cut'])} cut code lines")
    return by_width


def test_every_page_runs_its_scripts_offline(seen_by_reader):
    problems = {}
    for page, seen in seen_by_reader.items():
        if seen is None:
            problems[page] = "the page never finished loading"
            continue
        failed = [u for u in seen["failed_loads"] if LOCAL_MATHJAX or "mathjax" not in u.lower()]
        if failed or seen["script_errors"]:
            problems[page] = {"failed loads": failed, "script errors": seen["script_errors"]}
    assert not problems, json.dumps(problems, indent=1)


def test_plotly_figures_render(seen_by_reader, build):
    plots = {p: (s["plots_rendered"], s["plots"]) for p, s in seen_by_reader.items() if s}
    assert sum(total for _, total in plots.values()) > 0, "no plotly figure in the whole book"
    not_rendered = {p: f"{done} of {total} rendered" for p, (done, total) in plots.items() if done != total}
    assert not not_rendered, not_rendered


def test_chapters_show_pictures_and_tables(seen_by_reader, build):
    problems = {}
    for page in chapter_pages(build):
        seen = seen_by_reader.get(page)
        if not seen:
            continue   # reported by test_every_page_runs_its_scripts_offline
        issues = []
        if seen["images_broken"]:
            issues.append(f"images that do not load: {seen['images_broken']}")
        if seen["images"] + seen["plots"] == 0:
            issues.append("no picture (image or plotly figure)")
        if seen["tables"] == 0:
            issues.append("no table")
        if issues:
            problems[page] = issues
    assert not problems, json.dumps(problems, indent=1)


def test_math_is_rendered_locally(seen_by_reader):
    if not LOCAL_MATHJAX:
        pytest.skip("MathJax is loaded from its CDN: install sphinx-mathjax-offline "
                    "(book/_ext/mathjax_offline.py then serves it from _static)")
    problems = {p: {"math": s["math"], "typeset": s["math_rendered"], "errors": s["math_errors"]}
                for p, s in seen_by_reader.items()
                if s and (s["math_rendered"] < s["math"] or s["math_errors"])}
    assert not problems, "math that does not render:\n" + json.dumps(problems, indent=1)
    assert sum(s["math"] for s in seen_by_reader.values() if s) > 0, "no math found in the book"


def test_solutions_are_collapsed(seen_by_reader, build):
    shown = {p: s["solutions_shown"] for p, s in seen_by_reader.items() if s and s["solutions_shown"]}
    assert not shown, f"solutions visible without a click: {shown}"
    without = [p for p in chapter_pages(build) if seen_by_reader.get(p) and not seen_by_reader[p]["solutions"]]
    assert not without, f"chapters whose exercises have no (collapsed) solution: {without}"


# -- pages that fit: the column, readable text, readable figures ----------------------------------
# Lines of code left longer than a code box shows at 1024 px, on purpose (a reader scrolls
# them): page -> the first words of each line. At most MAX_CODE_EXCEPTIONS per page.
CODE_EXCEPTIONS: dict[str, list[str]] = {}
MAX_CODE_EXCEPTIONS = 5


def test_outputs_tables_and_blocks_fit_the_column_at_every_width(layouts):
    """No output, table, picture or block of text needs a sideways scroll, at any of WIDTHS."""
    problems = {}
    for width, pages in layouts.items():
        for page, layout in pages.items():
            issues = list(layout["wide"])
            if layout["page_scrolls_sideways"]:
                issues.append("the page itself scrolls sideways")
            if issues:
                problems[f"{page} at {width} px"] = issues[:15]
    count = sum(len(v) for v in problems.values())
    assert not problems, f"{count} cut outputs, tables or blocks:\n" + json.dumps(problems, indent=1)


def test_code_lines_fit_their_box_at_every_width(layouts):
    """Every line of code shows whole, at any of WIDTHS, but the listed CODE_EXCEPTIONS."""
    problems = {}
    for width, pages in layouts.items():
        for page, layout in pages.items():
            allowed = CODE_EXCEPTIONS.get(page, [])
            cut = [f"{c['chars']} > {c['fits']} characters: {c['line']}" for c in layout["code_cut"]
                   if not any(c["line"].startswith(a) for a in allowed)]
            if cut:
                problems[f"{page} at {width} px"] = cut[:20]
    count = sum(len(v) for v in problems.values())
    assert not problems, f"{count} cut code lines:\n" + json.dumps(problems, indent=1)


def test_code_exceptions_are_few_and_real():
    """CODE_EXCEPTIONS stay a handful per page, and each names a line its chapter has."""
    stale = []
    for page, lines in CODE_EXCEPTIONS.items():
        assert len(lines) <= MAX_CODE_EXCEPTIONS, f"{page}: {len(lines)} code exceptions"
        path = ROOT / f"{page}.ipynb"
        code = [line.strip() for cell in json.loads(path.read_text())["cells"]
                for line in "".join(cell["source"]).splitlines()] if path.is_file() else []
        stale += [f"{page}: {a}" for a in lines if not any(c.startswith(a) for c in code)]
    assert not stale, "code exceptions that name no line of their chapter:\n" + "\n".join(stale)


def test_text_in_outputs_tables_and_plotly_figures_is_readable(seen_by_reader):
    small = {p: s["layout"]["small_text"][:15] for p, s in seen_by_reader.items() if s and s["layout"]["small_text"]}
    assert not small, f"text set below {MIN_TEXT_PX} px:\n" + json.dumps(small, indent=1)


def smallest_figure_font_pt() -> float:
    """The smallest font matplotlib's default style uses for any figure text, in points."""
    import matplotlib
    from matplotlib.font_manager import FontProperties

    keys = ["font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "ytick.labelsize",
            "legend.fontsize", "figure.titlesize"]
    return min(FontProperties(size=matplotlib.rcParamsDefault[k]).get_size_in_points() for k in keys)


def png_dpi(path: Path) -> float | None:
    """Pixels per inch recorded in a PNG (matplotlib writes its savefig dpi there); None if absent."""
    from PIL import Image

    with Image.open(path) as image:
        dpi = image.info.get("dpi")
    return float(dpi[0]) if dpi else None


def test_figure_text_is_readable_at_its_displayed_size(seen_by_reader, build):
    """A picture's text, drawn at the style's smallest size and the PNG's dpi, shows at >= MIN_TEXT_PX.

    The browser shrinks a picture wider than the column; its text shrinks with it. The
    smallest text of a matplotlib figure is ``smallest_figure_font_pt()`` points at the dpi
    stored in the PNG, i.e. ``pt * dpi / 72`` pixels of the picture before it is shrunk by
    ``shown / natural``. ``test_chapters_keep_matplotlib_fonts_at_the_default_sizes`` checks
    that no chapter draws smaller text than that.
    """
    pt = smallest_figure_font_pt()
    problems = {}
    for page, seen in seen_by_reader.items():
        for image in (seen or {"layout": {"images": []}})["layout"]["images"]:
            path = (build["html"] / page).parent / unquote(urlsplit(image["src"]).path)
            dpi = png_dpi(path) if path.suffix.lower() == ".png" and path.is_file() else None
            if dpi is None or not image["natural"]:
                continue
            shown_px = pt * dpi / 72 * image["shown"] / image["natural"]
            if shown_px < MIN_TEXT_PX:
                width_in = image["natural"] / dpi
                problems.setdefault(page, []).append(
                    f"{path.name}: {width_in:.1f} in wide at {dpi:.0f} dpi, shown {image['shown']:.0f} px wide, "
                    f"so {pt:.0f} pt text shows at {shown_px:.1f} px")
    assert not problems, ("figures too wide for their text to stay readable (make them narrower, at most "
                          "about 9 in):\n" + json.dumps(problems, indent=1))


def test_plotly_panel_titles_do_not_overlap_and_legends_do_not_scroll(seen_by_reader):
    problems = {}
    for page, seen in seen_by_reader.items():
        if seen and (seen["layout"]["overlaps"] or seen["layout"]["legend_scrolls"]):
            problems[page] = {"overlapping titles": seen["layout"]["overlaps"],
                              "legends that scroll": seen["layout"]["legend_scrolls"]}
    assert not problems, json.dumps(problems, indent=1)


# A hand-made page for the probe's own test: what each block should (or should not) be reported as.
PROBE_SELF_TEST_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>probe</title></head>
<body><main><article class="bd-article" style="width: 400px; padding: 0 20px; font: 14px sans-serif">
<div class="cell_output"><div class="output" style="overflow-x: auto"><table style="width: 800px">
<tr><td>a wide table in its own scrolling box</td></tr></table></div></div>
<div class="cell_output"><pre style="overflow: visible">%s</pre></div>
<div class="cell_output"><div class="output" style="overflow: hidden"><table style="width: 800px">
<tr><td>a wide table cut off by its box</td></tr></table></div></div>
<div class="cell_output"><pre style="white-space: pre-wrap">%s</pre></div>
<div class="cell_output"><p style="font-size: 7px">tiny print</p><p>normal print</p></div>
<div class="cell_output"><img style="width: 100%%" src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7" alt=""></div>
<div class="admonition"><p>an exercise with <code>a_long_name_that_cannot_break_anywhere_at_all_in_its_line_x</code></p></div>
<div class="cell_input"><div class="highlight" style="overflow-x: auto"><pre style="font: 10px monospace; margin: 0; padding: 0">short = 1
%s
also_short = 2
</pre></div></div>
</article></main></body></html>""" % ("a long output line " * 12, "a wrapped output line " * 12, "x" * 90 + " = 1")


def test_the_layout_probe_reports_what_does_not_fit(tmp_path):
    """The probe flags what a reader sees cut: the too-wide output, the cut-off table, the table
    that scrolls in its own box, the exercise with an unbreakable word, the one long code line
    (not the wrapped output), and the tiny print."""
    (tmp_path / "page.html").write_text(PROBE_SELF_TEST_PAGE)
    url, stop = serve(tmp_path)
    try:
        seen = probe_pages(tmp_path, ["page"], url, tmp_path / "chromium-profile")["page"]
    finally:
        stop()
    layout = seen["layout"]
    assert layout["column"] == 400
    wide = "\n".join(layout["wide"])
    for cut in ("a long output line", "a wide table cut off", "in its own scrolling box", "an exercise with"):
        assert cut in wide, wide
    assert "a wrapped output line" not in wide, wide
    assert len(layout["wide"]) == 4, wide
    assert [(c["line"], c["chars"]) for c in layout["code_cut"]] == [("x" * 60, 94)], layout["code_cut"]
    assert 60 <= layout["code_columns"] <= 70, layout["code_columns"]   # 400 px of 10 px monospace
    assert [t.split(":")[0] for t in layout["small_text"]] == ["7.0 px"], layout["small_text"]
    assert [(i["natural"], round(i["shown"])) for i in layout["images"]] == [(1, 400)]


FONT_SIZE_ARGUMENT = re.compile(r"""\b(?:fontsize|labelsize)\s*=\s*(?:([0-9.]+)|["']([a-z-]+)["'])""")


def test_chapters_keep_matplotlib_fonts_at_the_default_sizes():
    """The figure check assumes no text below matplotlib's default sizes: no smaller font sizes,
    and no change of the style, in any chapter's code."""
    from matplotlib.font_manager import FontProperties

    pt, found = smallest_figure_font_pt(), []
    for path in sorted((ROOT / "book").glob("ch*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            code = "".join(cell["source"])
            if cell["cell_type"] != "code":
                continue
            if re.search(r"rcParams|plt\.rc\(|matplotlib\.rc\(|plt\.style", code):
                found.append(f"{path.name} cell {i}: changes the matplotlib style")
            for number, name in FONT_SIZE_ARGUMENT.findall(code):
                size = float(number) if number else FontProperties(size=name).get_size_in_points()
                if size < pt:
                    found.append(f"{path.name} cell {i}: font size {number or name} < {pt:.0f} pt")
    assert not found, "\n".join(found)


def test_screenshot_of_a_chapter(build, server, tmp_path):
    """A picture of the first chapter as a reader sees it, kept in tmp_path for inspection."""
    page = chapter_pages(build)[0]
    shot = tmp_path / f"{Path(page).name}.png"
    done = chromium(["--virtual-time-budget=20000", "--window-size=1280,2400", f"--screenshot={shot}",
                     f"{server}/{page}.html"], tmp_path / "chromium-profile")
    print(f"\nscreenshot: {shot}")
    assert shot.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, "the screenshot looks empty"
