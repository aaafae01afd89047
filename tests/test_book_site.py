"""The website, opened page by page in headless Chromium, exactly as a reader would see it offline.

The site in _build/html is built first when it is missing or older than its sources (the
same command as `make book`), served on 127.0.0.1 from a free port, and every page of the
table of contents is opened in Debian's Chromium driven by Playwright (no browser download).
Each page must: typeset all its math (MathJax CHTML), load every image, render every widget
from its stored state, request nothing that fails and nothing from any host but 127.0.0.1,
raise no JavaScript error, show its download button (and, for a chapter, its Colab launch
button), and link only to pages and anchors that exist. A chapter must also be a course unit
(objectives, estimated time, numbered exercises with collapsed solutions, self-checks, summary,
further reading). The search page must find a chapter.
A full-page screenshot of every page is saved in _build/screenshots/ for people to look at.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import os
import re
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HTML = REPO / "_build" / "html"
SCREENSHOTS = REPO / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium tries to reach Google's hosts at start-up.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions"]
BUILD_COMMAND = [str(REPO / ".venv" / "bin" / "jupyter-book"), "build", "--all", "-W", "-n", "--keep-going",
                 "--builder", "html", "."]
SEARCH_WORD = "tokenizer"  # chapter 1's subject: the search must return a chapter page for it
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
WIDGET_STATE = 'script[type="application/vnd.jupyter.widget-state+json"]'


def toc_docnames() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    names = [toc["root"]]
    for part in toc.get("parts", []):
        names += [entry["file"] for entry in part.get("chapters", [])]
    return names


def repository_url() -> str:
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


PAGES = toc_docnames()
CHAPTERS = [name for name in PAGES if name.startswith("chapters/")]


def test_toc_lists_exactly_the_chapters_that_exist():
    on_disk = sorted(p.with_suffix("").relative_to(REPO).as_posix()
                     for p in (REPO / "chapters").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(CHAPTERS) == on_disk, (
        f"_toc.yml lists chapters {sorted(CHAPTERS)} but chapters/ holds {on_disk}: "
        "add each chapter to _toc.yml once its .ipynb exists, and only then")
    for name in PAGES:
        assert (REPO / f"{name}.md").exists() or (REPO / f"{name}.ipynb").exists(), f"_toc.yml: {name} does not exist"


def _load(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cost_table_and_timing_script_hash_a_chapter_the_same_way(tmp_path):
    """A row is marked stale when the hashes differ, so the two implementations must agree."""
    import nbformat

    site_extension = _load(REPO / "book" / "_ext" / "book_site.py")
    timing_script = _load(REPO / "scripts" / "chapter_times.py")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"),
                                         nbformat.v4.new_code_cell("x = 1\nprint(x)"),
                                         nbformat.v4.new_code_cell("y = 'é'")])
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    assert site_extension.notebook_code_sha256(path) == timing_script.code_sha256(path)
    nb.cells[2].source = "y = 'e'"
    nbformat.write(nb, path)
    assert site_extension.notebook_code_sha256(path) == timing_script.code_sha256(path)
    assert [site_extension.format_duration(s) for s in (0.4, 59.5, 60, 125.2)] == ["0 s", "1 min 00 s", "1 min 00 s",
                                                                                  "2 min 05 s"]


def test_chapter_time_role_renders_the_measured_time_in_minutes():
    site_extension = _load(REPO / "book" / "_ext" / "book_site.py")
    assert [site_extension.approximate_minutes(s) for s in (11.5, 59.9, 60, 89, 90, 188.3, 495.9)] == [
        "under a minute", "under a minute", "about a minute", "about a minute", "about 2 minutes",
        "about 3 minutes", "about 8 minutes"]
    cpu = {"usable_cpus": 2, "gpu": None}
    entry = {"code_sha256": "abc", "in_order_seconds": 188.3, "in_order_passed": True}
    text, stale = site_extension.describe_chapter_time(entry, cpu, "abc")
    assert text.startswith("about 3 minutes on 2 CPU cores (3 min 08 s under nbval with the chapters run in "
                           "reading order from an empty cache") and not stale
    assert re.fullmatch(MEASURED_TIME, text)
    text, stale = site_extension.describe_chapter_time(dict(entry, standalone_seconds=29.6), cpu, "changed")
    assert stale and "30 s for this chapter alone" in text and "earlier version of the chapter's code" in text
    assert re.fullmatch(MEASURED_TIME, text)
    text, _ = site_extension.describe_chapter_time(dict(entry, in_order_passed=False), {"gpu": "NVIDIA H200"}, "abc")
    assert text.startswith("about 3 minutes on a GPU (NVIDIA H200) (") and "the timed run failed" in text
    assert re.fullmatch(MEASURED_TIME, text)
    assert site_extension.describe_chapter_time(None, cpu, "abc") == ("not measured yet", False)
    assert site_extension.describe_chapter_time({"standalone_seconds": 3.0}, cpu, "abc")[0] == "not measured yet"


# ---------------------------------------------------------------------------------------------
# Build (when stale) and serve the site


def _site_sources() -> list[Path]:
    sources = [REPO / "_toc.yml", REPO / "_config.yml"]
    sources += [p for p in (REPO / "book").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    sources += list((REPO / "chapters").glob("*.ipynb"))
    return sources


def _build_is_stale() -> bool:
    stamp = HTML / ".buildinfo"
    if not stamp.exists():
        return True
    built = stamp.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _site_sources())


def _ensure_vendored_assets() -> None:
    for script in ("scripts/vendor_assets.sh", "scripts/vendor_widget_fonts.sh"):
        result = subprocess.run(["bash", script], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, f"{script} failed (it needs the npm registry):\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def site():
    """Base URL of _build/html served on 127.0.0.1, and the list of requests the server refused."""
    _ensure_vendored_assets()
    if _build_is_stale():
        result = subprocess.run(BUILD_COMMAND, cwd=REPO, capture_output=True, text=True)
        output = result.stdout + result.stderr
        warnings = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line]
        assert result.returncode == 0, ("the book build failed (" + " ".join(BUILD_COMMAND[1:]) + "):\n"
                                        + "\n".join(warnings[:40]) + "\n...\n" + output[-3000:])
    refused: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # quiet, but remember every request that failed
            pass

        def log_request(self, code="-", size="-"):
            if str(code).isdigit() and int(code) >= 400:
                refused.append(f"{int(code)} {self.path}")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", refused
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`, "
                    "as .ci/run does) or set CHROMIUM to its path")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


# ---------------------------------------------------------------------------------------------
# One page, inspected


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def _fetch(url: str) -> tuple[int, frozenset]:
    """HTTP status of a local URL and, for HTML, the ids it defines."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            status = response.status
            kind = response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        return error.code, frozenset()
    ids: set[str] = set()
    if kind == "text/html":
        parser = _Anchors()
        parser.feed(body.decode("utf-8", errors="replace"))
        ids = parser.ids
    return status, frozenset(ids)


def _is_local(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme in ("data", "blob", "about") or parsed.hostname == "127.0.0.1"


def _screenshot_path(docname: str) -> Path:
    return SCREENSHOTS / (docname.replace("/", "__") + ".png")


def open_page(browser, url: str):
    """Open `url` in a fresh context; return (page, context, record of what happened)."""
    record = {"external": [], "failed": [], "bad_status": [], "console_errors": [], "page_errors": []}
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def route(route):
        if _is_local(route.request.url):
            route.continue_()
        else:  # nothing may leave the machine: refuse it, and fail the page
            record["external"].append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda r: _is_local(r.url) and record["failed"].append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and record["bad_status"].append(f"{r.status} {r.url}"))
    page.on("console", lambda m: m.type == "error" and record["console_errors"].append(m.text))
    page.on("pageerror", lambda e: record["page_errors"].append(str(e)))
    page.goto(url, wait_until="load")
    return page, context, record


def _wait_until_settled(page) -> list[str]:
    """Let MathJax typeset, widgets render and lazy images load; return problems seen while waiting."""
    problems = []
    page.evaluate("() => (window.MathJax && MathJax.startup) ? MathJax.startup.promise.then(() => true) : true")
    if page.locator(WIDGET_VIEW).count():
        try:
            page.wait_for_function(
                """(selector) => [...document.querySelectorAll(selector)].every(
                       s => s.parentElement.querySelector('.widget-subarea .jupyter-widgets'))""",
                arg=WIDGET_VIEW, timeout=20_000)
        except Exception:  # noqa: BLE001 — reported as a problem of the page below
            problems.append("widgets did not render within 20 s")
    page.evaluate("""async () => {
        for (let y = 0; y < document.body.scrollHeight; y += 800) {
            window.scrollTo(0, y); await new Promise(r => setTimeout(r, 20)); }
        window.scrollTo(0, 0); }""")
    page.wait_for_load_state("networkidle")
    return problems


def inspect_page(page) -> list[str]:
    """Everything wrong with the rendered page, as readable lines (empty: the page is fine)."""
    problems = []
    math = page.evaluate("""() => {
        const nodes = [...document.querySelectorAll('.math')];
        return {total: nodes.length,
                untypeset: nodes.filter(n => !n.querySelector('mjx-container[jax="CHTML"]'))
                                .map(n => n.textContent.slice(0, 80)),
                errors: [...document.querySelectorAll('mjx-merror')].map(n => n.textContent.slice(0, 80))}; }""")
    if math["untypeset"]:
        problems.append(f"{len(math['untypeset'])} of {math['total']} math elements not typeset by MathJax, "
                        f"e.g. {math['untypeset'][:3]}")
    if math["errors"]:
        problems.append(f"TeX errors: {math['errors'][:5]}")
    # TeX that never became a math element: `$$` inside a paragraph, an unclosed `$`, …
    raw_tex = page.evaluate(r"""() => {
        const skip = 'pre, code, script, style, textarea, mjx-container, .math, .highlight';
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        const found = [];
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
            if (n.parentElement.closest(skip)) continue;
            const t = n.textContent;
            const isMath = (e) => e && e.nodeType === 1 && e.matches('.math');
            const dollarAgainstMath = (/\$\s*$/.test(t) && isMath(n.nextSibling))
                || (/^\s*\$/.test(t) && isMath(n.previousSibling));
            if (dollarAgainstMath || /\$[^$]*\\[a-zA-Z]+[^$]*\$|\$\$|\\\(|\\\[/.test(t)) {
                found.push(t.trim().slice(0, 80));
            }
        }
        return found; }""")
    if raw_tex:
        problems.append(f"raw TeX shown as text (not typeset): {raw_tex[:3]}")

    broken_images = page.evaluate("""() => [...document.images]
        .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))""")
    if broken_images:
        problems.append(f"images not loaded: {broken_images}")

    widgets = page.evaluate("""([view, state]) => {
        const views = [...document.querySelectorAll(view)];
        return {views: views.length, state: document.querySelectorAll(state).length,
                blank: views.filter(s => {
                    const w = s.parentElement.querySelector('.widget-subarea .jupyter-widgets');
                    if (!w) return true;
                    const box = w.getBoundingClientRect();
                    return box.width === 0 || box.height === 0; }).length,
                errors: [...document.querySelectorAll('.widget-subarea')]
                    .filter(a => /Error displaying widget/.test(a.textContent)).length}; }""",
                            [WIDGET_VIEW, WIDGET_STATE])
    if widgets["views"]:
        if not widgets["state"]:
            problems.append(f"{widgets['views']} widget views but no stored widget state "
                            "(execute with --ExecutePreprocessor.store_widget_state=True)")
        if widgets["blank"]:
            problems.append(f"{widgets['blank']} of {widgets['views']} widget areas empty")
        if widgets["errors"]:
            problems.append(f"{widgets['errors']} widget areas show 'Error displaying widget'")
    return problems


def check_internal_links(page, page_url: str) -> list[str]:
    problems = []
    origin = urllib.parse.urlsplit(page_url).netloc
    hrefs = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    for href in sorted(set(hrefs)):
        if urllib.parse.urlsplit(href).netloc != origin:
            continue  # external links are not followed (and nothing external was requested)
        target, _, fragment = href.partition("#")
        status, ids = _fetch(target)
        if status != 200:
            problems.append(f"link to {target} gives HTTP {status}")
        elif fragment and target.endswith(".html") and urllib.parse.unquote(fragment) not in ids:
            problems.append(f"link to {href}: no element with id '{urllib.parse.unquote(fragment)}'")
    return problems


def check_buttons(page, docname: str) -> list[str]:
    problems = []
    is_notebook = (REPO / f"{docname}.ipynb").exists()
    suffix = ".ipynb" if is_notebook else ".md"
    source = page.locator(f'a.btn-download-source-button[href$="_sources/{docname}{suffix}"]')
    if source.count() != 1:
        problems.append(f"no download button for _sources/{docname}{suffix}")
    if is_notebook:
        colab = f"https://colab.research.google.com/github/{urllib.parse.urlsplit(repository_url()).path.strip('/')}" \
                f"/blob/main/{docname}.ipynb"
        if page.locator(f'a[href="{colab}"]').count() != 1:
            problems.append(f"no Colab launch button to {colab}")
    return problems


MEASURED_TIME = (r"(under a minute|about a minute|about \d+ minutes) on (\d+ CPU cores|a GPU \([^()]+\)) "
                 r"\((\d+ min \d\d s|\d+ s) under nbval[^()]*\)|not measured yet")


def check_course_structure(page, docname: str) -> list[str]:
    """A chapter is a course unit: objectives and time up front, ≥3 numbered exercises whose
    solutions start collapsed, self-checks from minimind.checks, a summary and further reading."""
    if not docname.startswith("chapters/"):
        return []
    problems = []
    chapter = int(Path(docname).name.split("_")[0])
    found = page.evaluate("""() => ({
        text: document.querySelector('main').innerText,
        chapter_time: (document.querySelector('main span.chapter-time') || {}).innerText || null,
        headings: [...document.querySelectorAll('main h2')].map(h => h.textContent.replace(/[#¶]/g, '').trim()),
        exercises: [...document.querySelectorAll('.exercise > .admonition-title')].map(t => t.textContent.trim()),
        solutions: [...document.querySelectorAll('.solution')].map(s => ({
            collapsed: s.classList.contains('toggle-hidden') &&
                [...s.children].slice(1).every(c => c.getBoundingClientRect().height === 0)})) })""")
    for phrase in ("Learning objectives", "Estimated time"):
        if phrase not in found["text"]:
            problems.append(f"no '{phrase}' near the top")
    # The run time shown is the measured one, rendered from book/chapter_times.json by the
    # {chapter-time}`cpu` role, not a typed estimate.
    if not re.fullmatch(MEASURED_TIME, found["chapter_time"] or ""):
        problems.append("the estimated time shows no measured run time ({chapter-time}`cpu` renders "
                        f"span.chapter-time), found {found['chapter_time']!r}")
    for heading in ("Exercises", "Summary", "Further reading"):
        if not any(h.startswith(heading) for h in found["headings"]):
            problems.append(f"no '{heading}' section")
    if len(found["exercises"]) < 3:
        problems.append(f"{len(found['exercises'])} exercises (at least 3 wanted)")
    wrong_numbers = [t for t in found["exercises"] if not re.match(rf"Exercise {chapter}\.\d+\b", t)]
    if wrong_numbers:
        problems.append(f"exercises not numbered {chapter}.k: {wrong_numbers[:3]}")
    if len(found["solutions"]) < len(found["exercises"]):
        problems.append(f"{len(found['exercises'])} exercises but {len(found['solutions'])} solutions")
    if not all(s["collapsed"] for s in found["solutions"]):
        problems.append("a solution is not collapsed (use `:class: dropdown`)")
    if "minimind.checks" not in (REPO / f"{docname}.ipynb").read_text(encoding="utf-8"):
        problems.append("no self-check from minimind.checks is demonstrated")
    return problems


@pytest.mark.parametrize("docname", PAGES)
def test_page_renders_offline_without_errors(site, browser, docname):
    base_url, refused = site
    refused_before = len(refused)
    url = f"{base_url}/{docname}.html"
    page, context, record = open_page(browser, url)
    try:
        problems = _wait_until_settled(page)
        problems += inspect_page(page)
        problems += check_buttons(page, docname)
        problems += check_course_structure(page, docname)
        problems += check_internal_links(page, url)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(_screenshot_path(docname)), full_page=True)
    finally:
        context.close()
    for kind, entries in record.items():
        if entries:
            problems.append(f"{kind.replace('_', ' ')}: {entries[:5]}")
    if len(refused) > refused_before:
        problems.append(f"the server refused: {refused[refused_before:][:5]}")
    assert not problems, f"{docname}.html:\n  " + "\n  ".join(problems)


def test_search_returns_a_chapter_for_a_known_word(site, browser):
    base_url, _ = site
    assert CHAPTERS, "the table of contents lists no chapter"
    page, context, record = open_page(browser, f"{base_url}/search.html?q={SEARCH_WORD}")
    try:
        page.wait_for_function("() => document.querySelectorAll('#search-results a').length > 0", timeout=30_000)
        results = page.evaluate("() => [...document.querySelectorAll('#search-results a')].map(a => a.href)")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "search.png"), full_page=True)
    finally:
        context.close()
    assert any("/chapters/" in href for href in results), f"searching '{SEARCH_WORD}' found no chapter: {results}"
    assert not record["page_errors"] and not record["console_errors"] and not record["external"], record


def test_landing_page_lists_the_measured_cost_of_every_chapter(site, browser):
    base_url, _ = site
    page, context, _ = open_page(browser, f"{base_url}/{PAGES[0]}.html")
    try:
        rows = page.evaluate("""() => [...document.querySelectorAll('table.chapter-times tbody tr')].map(
            tr => ({link: (tr.querySelector('a') || {}).href || '', cells: [...tr.cells].map(c => c.innerText)}))""")
    finally:
        context.close()
    assert len(rows) == len(CHAPTERS), f"the cost table has {len(rows)} rows for {len(CHAPTERS)} chapters"
    for row, docname in zip(rows, CHAPTERS):
        assert row["link"].endswith(f"/{docname}.html"), (row, docname)
        assert row["cells"][0].strip(), f"{docname}: the row shows no chapter title"
        assert all(re.fullmatch(r"(\d+ min \d\d s|\d+ s)( \(failed\))?( \*)?|not measured yet", c.strip())
                   for c in row["cells"][1:]), row
