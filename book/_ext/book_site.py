"""Sphinx additions the MiniMind Book website needs.

1. `drop_repeated_scripts`: sphinx-thebe and sphinx-togglebutton register inline scripts
   while documents are read, and Sphinx 7.4 then emits each of them twice on every page;
   a repeated `const THEBE_JS_URL` is a SyntaxError in the browser. Exact repeats of a
   script (same source, same attributes) are dropped from each page, keeping the first.
2. The `chapter-times` directive: the landing page's table of what each chapter costs to
   run, rendered from book/chapter_times.json, which scripts/chapter_times.py writes from
   timed nbval runs. One row per chapter in _toc.yml; a chapter whose code changed since
   it was timed is marked, one never timed says so.
3. The `chapter-time` role: {chapter-time}`cpu` in a chapter's "Estimated time" line renders
   that chapter's measured run time under the label (cpu, gpu) from the same file, e.g.
   "about 3 minutes on 2 CPU cores (3 min 08 s under nbval, …)", marked the same way when the
   chapter's code changed since it was timed, and "not measured yet" when it never was.
4. `number_exercises_by_chapter`: sphinx-exercise numbers exercises through the whole book
   (chapter 3's first exercise would be "Exercise 10"). A course assigns "exercise 2.3", so
   exercises in chapters/NN_*.ipynb are numbered NN.1, NN.2, … in page order.

tests/test_book_site.py opens every page in headless Chromium and checks them.
"""
import hashlib
import json
import re
from pathlib import Path

import yaml
from docutils import nodes
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective, SphinxRole


def _script_key(script):
    attributes = tuple(sorted((k, str(v)) for k, v in script.attributes.items()))
    # An inline script's filename is None when registered through the builder and "" when
    # registered through the application: the same script either way.
    return (str(script.filename or ""), attributes)


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: Sphinx restores the shared list after the page


CHAPTER_DOCNAME = re.compile(r"chapters/(\d+)_")


def number_exercises_by_chapter(app, env):
    """Renumber each chapter's exercises NN.1, NN.2, … (after Sphinx has assigned book-wide numbers)."""
    for docname, numbers_by_type in env.toc_fignumbers.items():
        match = CHAPTER_DOCNAME.match(docname)
        exercises = numbers_by_type.get("exercise")
        if not match or not exercises:
            continue
        chapter = int(match.group(1))
        in_page_order = sorted(exercises, key=lambda node_id: exercises[node_id])
        numbers_by_type["exercise"] = {node_id: (chapter, i) for i, node_id in enumerate(in_page_order, start=1)}
    return []


def format_duration(seconds):
    """45.2 → '45 s', 125 → '2 min 05 s'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def notebook_code_sha256(path):
    """Same hash as scripts/chapter_times.py: the code cells of the notebook."""
    notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in notebook["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256("\n\x00\n".join(sources).encode()).hexdigest()


STALE_NOTE = "measured on an earlier version of the chapter's code"


def approximate_minutes(seconds):
    """59 → 'under a minute', 90 → 'about 2 minutes', 188 → 'about 3 minutes'."""
    if seconds < 60:
        return "under a minute"
    minutes = int(seconds / 60 + 0.5)
    return "about a minute" if minutes == 1 else f"about {minutes} minutes"


def describe_chapter_time(entry, machine, current_hash):
    """The `chapter-time` role's text for one chapter's entry of a run (None: never measured); stale flag."""
    if not entry or "in_order_seconds" not in entry:
        return "not measured yet", False
    seconds = entry["in_order_seconds"]
    where = f"a GPU ({machine['gpu']})" if machine.get("gpu") else f"{machine.get('usable_cpus', '?')} CPU cores"
    details = [f"{format_duration(seconds)} under nbval with the chapters run in reading order from an empty "
               "cache, so it includes building the models and data this chapter introduces, while those of earlier "
               "chapters come from the cache"]
    if "standalone_seconds" in entry:
        details.append(f"{format_duration(entry['standalone_seconds'])} for this chapter alone from an empty cache")
    if not entry.get("in_order_passed", False):
        details.append("the timed run failed")
    stale = entry.get("code_sha256") != current_hash
    if stale:
        details.append(STALE_NOTE)
    return f"{approximate_minutes(seconds)} on {where} ({'; '.join(details)})", stale


def load_chapter_runs(env, config):
    """The "runs" of book/chapter_times.json, recorded as a dependency of the current document."""
    results_path = Path(env.srcdir) / config.chapter_times_path
    env.note_dependency(str(results_path))
    if not results_path.exists():
        return None, results_path
    return json.loads(results_path.read_text(encoding="utf-8")).get("runs", {}), results_path


class ChapterTime(SphinxRole):
    """{chapter-time}`cpu`: the current chapter's measured run time (see the module docstring)."""

    def run(self):
        label = self.text.strip()
        runs, results_path = load_chapter_runs(self.env, self.config)
        if runs is None:
            msg = self.inliner.reporter.error(f"{results_path} is missing: run `python scripts/chapter_times.py`",
                                              line=self.lineno)
            return [], [msg]
        notebook = Path(self.env.srcdir) / f"{self.env.docname}.ipynb"
        current_hash = notebook_code_sha256(notebook) if notebook.exists() else None
        run = runs.get(label, {})
        entry = run.get("chapters", {}).get(Path(self.env.docname).name)
        text, stale = describe_chapter_time(entry, run.get("machine", {}), current_hash)
        classes = ["chapter-time"] + (["chapter-time-stale"] if stale else [])
        return [nodes.inline(self.rawtext, text, classes=classes)], []


class ChapterTimes(SphinxDirective):
    """Table of measured chapter run times (see the module docstring)."""

    has_content = False
    option_spec = {}
    columns = [("cpu", "standalone", "CPU, chapter on its own"),
               ("cpu", "in_order", "CPU, after the chapters before it"),
               ("gpu", "standalone", "GPU machine, chapter on its own")]

    def run(self):
        srcdir = Path(self.env.srcdir)
        toc_path = srcdir / self.config.external_toc_path
        runs, results_path = load_chapter_runs(self.env, self.config)
        if runs is None:
            raise self.error(f"{results_path} is missing: run `python scripts/chapter_times.py`")
        toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
        chapters = [e["file"] for part in toc.get("parts", []) for e in part.get("chapters", [])
                    if e["file"].startswith("chapters/")]

        table = nodes.table(classes=["chapter-times"], ids=["chapter-times-table"])
        group = nodes.tgroup(cols=1 + len(self.columns))
        table += group
        for width in [34] + [22] * len(self.columns):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row([nodes.Text("Chapter")] + [nodes.Text(title) for _, _, title in self.columns])
        body = nodes.tbody()
        group += body
        stale_seen = False
        for docname in chapters:
            notebook = srcdir / f"{docname}.ipynb"
            self.env.note_dependency(str(notebook))
            current_hash = notebook_code_sha256(notebook)
            link = addnodes.pending_xref("", nodes.inline("", ""), refdomain="std", reftype="doc",
                                         reftarget=f"/{docname}", refexplicit=False, refwarn=True,
                                         refdoc=self.env.docname)
            cells = [link]
            for label, mode, _ in self.columns:
                entry = runs.get(label, {}).get("chapters", {}).get(Path(docname).name)
                if not entry or f"{mode}_seconds" not in entry:
                    cells.append(nodes.Text("not measured yet"))
                    continue
                text = format_duration(entry[f"{mode}_seconds"])
                if not entry.get(f"{mode}_passed", False):
                    text += " (failed)"
                if entry.get("code_sha256") != current_hash:
                    text += " *"
                    stale_seen = True
                cells.append(nodes.Text(text))
            body += self._row(cells)

        notes = nodes.bullet_list()
        for label, run in sorted(runs.items()):
            machine = run.get("machine", {})
            device = machine.get("gpu") or "no GPU"
            text = (f"{label}: {machine.get('cpu', 'unknown CPU')}, {machine.get('usable_cpus', '?')} usable cores, "
                    f"{machine.get('torch_threads', '?')} torch threads, {device}; torch {machine.get('torch', '?')}; "
                    f"measured on {run.get('measured_on', '?')} (load average {run.get('load_average_at_start', '?')} "
                    f"at the start, {run.get('load_average_at_end', '?')} at the end).")
            notes += nodes.list_item("", nodes.paragraph(text=text))
        result = [table, nodes.paragraph(text="Machines the times were measured on:"), notes]
        if any(run.get("load_average_at_start", 0) > run.get("machine", {}).get("usable_cpus", float("inf"))
               for run in runs.values()):
            result.append(nodes.paragraph(text=(
                "A load average above the number of usable cores means other jobs shared the machine "
                "during the run: those times are upper bounds.")))
        if stale_seen:
            result.append(nodes.paragraph(text=f"* {STALE_NOTE}."))
        return result

    @staticmethod
    def _row(cell_contents):
        row = nodes.row()
        for content in cell_contents:
            entry = nodes.entry()
            entry += nodes.paragraph("", "", content)
            row += entry
        return row


def setup(app):
    app.add_config_value("chapter_times_path", "book/chapter_times.json", "env")
    app.add_directive("chapter-times", ChapterTimes)
    app.add_role("chapter-time", ChapterTime())
    # After every other html-page-context handler, so scripts added per page are seen too.
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    # After Sphinx's TocTreeCollector (priority 500) has assigned the book-wide numbers.
    app.connect("env-get-updated", number_exercises_by_chapter, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
