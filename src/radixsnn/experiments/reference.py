"""The reference results: the runs behind the README's results table and ``docs/reference.md``.

``docs/results/runs.toml`` declares them: each ``[[row]]`` is a line of the README's table (one network,
one way of making its SNN, a run per time-step count), each ``[[figure]]`` one of the paper's figures;
each carries the commands that produce its result file. ``scripts/results.py run`` executes the commands
and stores every result in ``docs/results/NAME.json`` with its provenance (commands, date, version,
commit, CPU); this module reads those files and renders both pages from them, so no number on either page
is typed by hand, and a test checks that the committed pages are what the files give.

>>> spec = parse_spec('''
... [[row]]
... name = "r20"
... label = "ResNet-20, CIFAR-10"
... weights = "pretrained"
... how = "post-training conversion"
... time_steps = [2, 8]
... commands = ["radixsnn convert --model resnet20 --weights W --time-steps {T} --out {work}/{run}.snn"]
... result = "{work}/{run}.json"
... ''')
>>> [(run.name, run.commands[0].split()[-1]) for run in spec.rows[0].runs]
[('r20-t2', '{work}/r20-t2.snn'), ('r20-t8', '{work}/r20-t8.snn')]
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from radixsnn.errors import ConfigError, DataError
from radixsnn.experiments.report import load_results_json, markdown_table, report_markdown

#: The README block the front table fills.
BEGIN, END = "<!-- results-table: begin -->", "<!-- results-table: end -->"
NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
ROW_KEYS = {"name", "label", "weights", "how", "time_steps", "commands", "result", "paper_tables"}
FIGURE_KEYS = {"name", "kind", "title", "commands", "result", "image"}
FIGURE_KINDS = ("coding_error", "sweep")


@dataclass(frozen=True)
class Run:
    """One result file: its name, the commands that write it, where they leave it, its time steps."""

    name: str
    commands: tuple[str, ...]
    result: str
    time_steps: int | None = None
    image: str | None = None


@dataclass(frozen=True)
class Row:
    """A line of the results table: one network and one way of making its SNN, a run per T."""

    name: str
    label: str
    weights: str
    how: str
    runs: tuple[Run, ...]
    paper_tables: bool = True


@dataclass(frozen=True)
class Figure:
    """One of the paper's figures: a ``radixsnn rmse`` (``coding_error``) or ``sweep`` run."""

    name: str
    kind: str
    title: str
    run: Run


@dataclass(frozen=True)
class Spec:
    rows: tuple[Row, ...]
    figures: tuple[Figure, ...]

    @property
    def runs(self) -> list[Run]:
        return [run for row in self.rows for run in row.runs] + [f.run for f in self.figures]


def _text(entry: dict, key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"{where}: must be a non-empty string, got {value!r}")
    return value


def _commands(entry: dict, where: str) -> tuple[str, ...]:
    value = entry.get("commands")
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c.startswith("radixsnn ") for c in value):
        raise ConfigError("commands", f"{where}: must be a non-empty list of `radixsnn ...` command lines")
    return tuple(value)


def _name(entry: dict, where: str, seen: set) -> str:
    name = _text(entry, "name", where)
    if not NAME.fullmatch(name):
        raise ConfigError("name", f"{where}: {name!r} must be lower-case letters, digits and dashes")
    if name in seen:
        raise ConfigError("name", f"{where}: {name!r} is used twice")
    seen.add(name)
    return name


def _fill(template: str, run: str, steps: int | None) -> str:
    return template.replace("{run}", run).replace("{T}", "" if steps is None else str(steps))


def load_spec(path: str | Path) -> Spec:
    """The rows and figures of a ``runs.toml`` file (see :func:`parse_spec`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("spec", f"{path} cannot be read ({exc.strerror or exc})") from None
    return parse_spec(text, path.name)


def parse_spec(text: str, where: str = "runs.toml") -> Spec:
    """The rows and figures of a ``runs.toml`` text; a malformed entry raises :class:`ConfigError` naming its key."""
    path = Path(where)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("spec", f"{where} is not TOML: {exc}") from None
    unknown = set(data) - {"row", "figure"}
    if unknown:
        raise ConfigError("spec", f"{path}: unknown tables {sorted(unknown)} (expected [[row]] and [[figure]])")
    seen: set = set()
    rows, figures = [], []
    for i, entry in enumerate(data.get("row", [])):
        where = f"{path.name} row {i + 1}"
        if set(entry) - ROW_KEYS:
            raise ConfigError("spec", f"{where}: unknown keys {sorted(set(entry) - ROW_KEYS)}")
        name = _name(entry, where, seen)
        steps = entry.get("time_steps")
        if not isinstance(steps, list) or not steps or not all(type(t) is int and 1 <= t <= 16 for t in steps) \
                or len(set(steps)) != len(steps):
            raise ConfigError("time_steps", f"{where}: must be a list of distinct integers in 1..16, got {steps!r}")
        commands, result = _commands(entry, where), _text(entry, "result", where)
        runs = []
        for t in steps:
            run = f"{name}-t{t}"
            seen.add(run)
            runs.append(Run(run, tuple(_fill(c, run, t) for c in commands), _fill(result, run, t), t))
        paper = entry.get("paper_tables", True)
        if not isinstance(paper, bool):
            raise ConfigError("paper_tables", f"{where}: must be true or false, got {paper!r}")
        rows.append(Row(name, _text(entry, "label", where), _text(entry, "weights", where), _text(entry, "how", where),
                        tuple(runs), paper))
    for i, entry in enumerate(data.get("figure", [])):
        where = f"{path.name} figure {i + 1}"
        if set(entry) - FIGURE_KEYS:
            raise ConfigError("spec", f"{where}: unknown keys {sorted(set(entry) - FIGURE_KEYS)}")
        name = _name(entry, where, seen)
        kind = _text(entry, "kind", where)
        if kind not in FIGURE_KINDS:
            raise ConfigError("kind", f"{where}: must be one of {', '.join(FIGURE_KINDS)}, got {kind!r}")
        image = entry.get("image")
        run = Run(name, tuple(_fill(c, name, None) for c in _commands(entry, where)),
                  _fill(_text(entry, "result", where), name, None), None,
                  None if image is None else _fill(image, name, None))
        figures.append(Figure(name, kind, _text(entry, "title", where), run))
    if not rows:
        raise ConfigError("spec", f"{path}: no [[row]]")
    return Spec(tuple(rows), tuple(figures))


# ----------------------------------------------------------------------------- reading results


def result_path(run: Run, results_dir: str | Path) -> Path:
    return Path(results_dir) / f"{run.name}.json"


def read_result(run: Run, results_dir: str | Path) -> dict | None:
    """The stored result of ``run`` (``None`` if it has not been run); an SNN result whose logits differ
    from its QANN's on any image is refused, never rendered."""
    path = result_path(run, results_dir)
    if not path.exists():
        return None
    data = load_results_json(path)
    if run.time_steps is not None:
        for key in ("accuracy", "images", "time_steps"):
            if not isinstance(data.get(key), (int, float)):
                raise DataError(f"{path}: no {key!r}; not a result of radixsnn evaluate or finetune")
        if data["time_steps"] != run.time_steps:
            raise DataError(f"{path}: holds T = {data['time_steps']}, its run {run.name} is T = {run.time_steps}")
        if data.get("agreement") != 1.0:
            raise DataError(f"{path}: the SNN's logits differ from its QANN's (agreement {data.get('agreement')!r})")
    return data


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f} %"


# ----------------------------------------------------------------------------- the pages


def _columns(spec: Spec) -> list[int]:
    return sorted({run.time_steps for row in spec.rows for run in row.runs})


def front_table(spec: Spec, results_dir: str | Path) -> str:
    """The results table: a line per row (float accuracy, the SNN's at each T, exactness), then each row's
    commands, numbered as the table's last column."""
    columns = _columns(spec)
    header = ["network", "weights", "how", "float", *[f"T = {t}" for t in columns], "SNN == QANN", "commands"]
    lines = []
    for number, row in enumerate(spec.rows, 1):
        found = {run.time_steps: read_result(run, results_dir) for run in row.runs}
        done = [r for r in found.values() if r is not None]
        fp = next((r["fp_accuracy"] for r in done if r.get("fp_accuracy") is not None), None)
        images = sum(r["images"] for r in done)
        exact = f"every image ({images:,})" if done else "not run"
        cells = [_pct(found[t]["accuracy"]) if found.get(t) else "" for t in columns]
        lines.append([row.label, row.weights, row.how, _pct(fp), *cells, exact, f"[{number}](#{row.name})"])
    return markdown_table(header, lines) + "\n\n" + commands_list(spec)


def _shown(command: str) -> str:
    """A command as a reader types it: files in the current folder, progress bars on."""
    return command.replace(" --no-progress", "").replace("{work}/", "")


def commands_list(spec: Spec) -> str:
    """Each row's commands with ``{T}`` left for the reader (the row's values given)."""
    parts = []
    for number, row in enumerate(spec.rows, 1):
        steps = ", ".join(str(r.time_steps) for r in row.runs)
        first = row.runs[0]
        shown = [_shown(c).replace(first.name, f"{row.name}-tT").replace(f"--time-steps {first.time_steps}", "--time-steps T")
                 for c in first.commands]
        parts.append(f'<a id="{row.name}"></a>{number}. {row.label}, {row.how} (T = {steps}):\n\n'
                     + "   ```\n" + "".join(f"   {c}\n" for c in shown) + "   ```\n")
    return "\n".join(parts)


def _cell_details(spec: Spec, results_dir) -> str:
    header = ["run", "SNN", "QANN", "float", "SNN == QANN", "engine", "images", "operations / image (Eq. 24)",
              "spikes / image", "measured", "commit"]
    lines = []
    for row in spec.rows:
        for run in row.runs:
            r = read_result(run, results_dir)
            if r is None:
                lines.append([run.name, *[""] * (len(header) - 2), "not run"])
                continue
            prov = r.get("provenance", {})
            spikes = r.get("spikes_per_image")
            lines.append([f"[{run.name}](results/{run.name}.json)", _pct(r["accuracy"]), _pct(r.get("qann_accuracy")),
                          _pct(r.get("fp_accuracy")), "every image" if r.get("agreement") == 1.0 else "",
                          str(r.get("engine", "")), f"{r['images']:,}", f"{r['ops_graph']:.4g}" if r.get("ops_graph") else "",
                          "" if spikes is None else f"{spikes:.4g}", str(prov.get("date", "")),
                          f"`{prov['commit'][:8]}`" if prov.get("commit") else ""])
    return markdown_table(header, lines) + "\n"


def _figure_section(figure: Figure, results_dir) -> str:
    run = figure.run
    head = f"## {figure.title}\n\n```\n" + "".join(_shown(c) + "\n" for c in run.commands) + "```\n\n"
    path = result_path(run, results_dir)
    if not path.exists():
        return head + "Not run yet.\n"
    data = load_results_json(path)
    image = f"![{figure.title}](results/{run.name}.png)\n\n" if (Path(results_dir) / f"{run.name}.png").exists() else ""
    if figure.kind == "coding_error":
        return head + image + _coding_error_text(data)
    return head + image + _sweep_text(data)


def _coding_error_text(data: dict) -> str:
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise DataError("a coding_error.json without rows")
    radix = {r["time_steps"]: r["rmse"] for r in rows if r.get("coding") == "radix"}
    rate = {r["time_steps"]: r["rmse"] for r in rows if r.get("coding") == "rate"}
    steps = [t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256) if t in radix or t in rate]
    def rmse(table, t):
        return f"{table[t]:.3e}" if t in table else ""

    table = markdown_table(["T", "radix RMSE", "rate RMSE"], [[str(t), rmse(radix, t), rmse(rate, t)] for t in steps])
    claims = data.get("claims", {})
    facts = []
    if claims.get("radix_vs_rate_T8_reduction") is not None:
        facts.append(f"at T = 8 radix coding's RMSE is {100 * claims['radix_vs_rate_T8_reduction']:.1f} % below rate coding's")
    for t in (8, 16):
        n = claims.get(f"rate_steps_matching_radix_T{t}")
        facts.append(f"rate coding needs {'more than 256' if n is None else n} steps to match radix T = {t}")
    return (f"{data.get('images', '?'):,} test images, {data.get('activations', 0):,} activations "
            f"({100 * data.get('zero_fraction', 0):.1f} % zeros). " + "; ".join(facts) + ".\n\n" + table + "\n")


def _sweep_text(data: dict) -> str:
    rows = [r for r in data.get("rows", []) if isinstance(r, dict)]
    if not rows:
        raise DataError("a sweep.json without rows")
    bits = sorted({r["weight_bits"] for r in rows}, reverse=True)
    steps = sorted({r["time_steps"] for r in rows})
    acc = {(r["weight_bits"], r["time_steps"]): r for r in rows if r.get("mode") == "post-training"}
    table = markdown_table(["weight bits", *[f"T = {t}" for t in steps]],
                           [[str(b), *[_pct(acc[(b, t)]["accuracy"]) if (b, t) in acc else "" for t in steps]] for b in bits])
    exact = all(r.get("agreement") == 1.0 for r in rows)
    return (f"Accuracy on the first {data.get('images', 0):,} test images; SNN == QANN on "
            f"{'every image of every point' if exact else 'NOT every point'}.\n\n" + table + "\n")


def reference_page(spec: Spec, results_dir: str | Path) -> str:
    """``docs/reference.md``: the table, every cell's details, Tables 2 and 3, the figures."""
    tables = [result_path(run, results_dir) for row in spec.rows if row.paper_tables for run in row.runs]
    # the report names its sources; name them as the page links them, not by this machine's path
    report = report_markdown([p for p in tables if p.exists()]).replace(f"{Path(results_dir)}/", "results/")
    parts = [
        "# Results\n",
        "<!-- Generated by `python scripts/results.py render` from docs/results/*.json; do not edit by hand. -->\n",
        "Today's reference numbers. Every number below is read from a result file in "
        "docs/results/ written by the commands beside it (the runs are declared in "
        "[docs/results/runs.toml](results/runs.toml); `python scripts/results.py run NAME` remakes one). All 10,000 test images, on "
        "the CPU, SNN == QANN checked on every image; a result whose logits differ from its QANN's is refused. "
        "What was tried on the way, and numbers measured with earlier defaults, are in the "
        "[lab notebook](notebook.md).\n",
        "## Accuracy and exactness\n",
        front_table(spec, results_dir),
        "### Every cell\n",
        _cell_details(spec, results_dir),
        "## Tables 2 and 3 of the paper\n",
        report,
        *[_figure_section(f, results_dir) for f in spec.figures],
    ]
    return "\n".join(parts)


def readme_with_table(readme: str, spec: Spec, results_dir: str | Path) -> str:
    """``readme`` with the block between the results-table markers replaced by the current table."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise DataError(f"README has no results block ({BEGIN} ... {END})")
    table = front_table(spec, results_dir)
    return readme[: start + len(BEGIN)] + "\n" + table + readme[end:]
