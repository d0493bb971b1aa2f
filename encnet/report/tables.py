"""Comparison tables: reported | reproduced | Δ, built from ``reported.csv`` and run logs only.

``compare`` is pure (two DataFrames in, one tidy DataFrame out) and is what the tests check; ``display``
turns it into the printed layout; ``write_table`` writes ``tables/<name>.md`` (tabulate), ``.csv`` (the tidy
numbers, for anyone re-analysing them) and ``.tex``.

Δ is reproduced − reported, and is computed only when both measure the same thing: the paper profile and the
same split. A demo-profile table runs a CPU-sized model on generated data, so its numbers are not comparable to
the paper's; what a demo can show is the paper's *direction* (EncNet > FCN, SE-loss helps), which
``direction_checks`` states row against row.

Tables 2–5 are printed whole (``whole_table``): every method of the paper's table, as ``reported.csv`` lists
it, with the reproduced rows inserted after the paper row they reproduce and marked "ours" (or "ours (demo)").
Table 1's rows are all reproduced, so it keeps the side-by-side layout of ``display``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from . import stats
from .reported import UNVERIFIED_FOOTNOTE, UNVERIFIED_MARK, format_reported, lookup
from .runlogs import CLASS_IOU_PREFIX

PROFILES = ("demo", "paper")
NOT_RUN = "not run"
COMPARE_COLUMNS = ["row", "metric", "reported", "reported_text", "verified", "reproduced_mean",
                   "reproduced_std", "n", "ci_half_width", "delta", "vs_reported", "status", "runs"]
DIRECTION_COLUMNS = ["claim", "metric", "reported_gap", "reproduced_gap", "ci_low", "ci_high", "n_pairs", "interval",
                     "controls_min", "verdict", "note"]
# A control class (ring, cross: decided by local appearance in every scene) counts as learned from this IoU (%).
CONTROL_MIN_IOU = 50.0


@dataclass(frozen=True)
class TableRow:
    """One printed row: its label, where its reported number lives, and why it cannot run (if it cannot)."""

    label: str
    reported_experiment: str | None = None
    reported_row: str | None = None
    not_run_reason: str | None = None  # e.g. "test server": the row is "not run" by construction
    comparable: bool = True  # False when the reproduced number measures another split than the reported one


@dataclass(frozen=True)
class Direction:
    """A claim of the paper that one row beats another on a metric (e.g. EncNet > FCN on mIoU).

    ``controls`` are metrics (e.g. ``IoU_ring``) that every arm must have learned (mean over seeds at least
    ``CONTROL_MIN_IOU``) before the direction gets a verdict other than inconclusive.
    """

    better: str
    worse: str
    metric: str
    controls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Section:
    """One part of a whole paper table: the rows of one ``reported.csv`` experiment (e.g. VOC without COCO)."""

    experiment: str
    label: str


def output_name(name: str, profile: str) -> str:
    """Demo outputs carry the profile in their file name so they can never overwrite a paper table."""
    check_profile(profile)
    return name if profile == "paper" else f"{name}_{profile}"


def output_title(title: str, profile: str) -> str:
    check_profile(profile)
    return title if profile == "paper" else f"{title} — {profile} profile"


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, found {profile!r}")


def compare(rows: Sequence[TableRow], metrics: Sequence[str], reported: pd.DataFrame, results: pd.DataFrame,
            profile: str) -> pd.DataFrame:
    """Tidy comparison, one line per (row, metric): reported value, reproduced mean/std over seeds, n, Δ.

    ``results`` is ``runlogs.collect_results`` output; its ``row`` column holds the labels of ``rows``.
    Results of another profile are an error: demo and paper runs never share a table.
    """
    check_profile(profile)
    other = sorted(set(results["profile"]) - {profile}) if len(results) else []
    if other:
        raise ValueError(f"a {profile}-profile table was given runs of profile {other}; "
                         "demo and paper runs never share a table")
    records = []
    for row in rows:
        for metric in metrics:
            entry = (lookup(reported, row.reported_experiment, row.reported_row, metric)
                     if row.reported_experiment else None)
            mine = results[(results["row"] == row.label) & (results["metric"] == metric)]
            mine = mine.sort_values("seed")
            n = len(mine)
            mean = float(mine["value"].mean()) if n else float("nan")
            # Sample standard deviation (ddof=1): the spread a reader would expect from another seed.
            std = float(mine["value"].std(ddof=1)) if n > 1 else float("nan")
            if row.not_run_reason:
                status = f"{NOT_RUN}: {row.not_run_reason}"
            else:
                status = "ok" if n else NOT_RUN
            half = stats.t_interval(list(mine["value"])).half_width if n else float("nan")
            delta = (mean - float(entry["value"])
                     if n and entry is not None and profile == "paper" and row.comparable else float("nan"))
            against = ("" if pd.isna(delta) else
                       stats.reported_verdict(mean, half, float(entry["value"])))
            records.append({
                "row": row.label,
                "metric": metric,
                "reported": float(entry["value"]) if entry is not None else float("nan"),
                "reported_text": format_reported(entry) if entry is not None else "",
                "verified": entry["verified"] if entry is not None else "",
                "reproduced_mean": mean,
                "reproduced_std": std,
                "n": n,
                "ci_half_width": half,
                "delta": delta,
                "vs_reported": against,
                "status": status,
                "runs": ";".join(mine["run_dir"]) + (f" [{mine['eval'].iloc[0]}]" if n else ""),
            })
    return pd.DataFrame.from_records(records, columns=COMPARE_COLUMNS)


def _reproduced_cell(line: pd.Series) -> str:
    if line["status"] != "ok":
        return line["status"]
    if line["n"] > 1:
        return f"{line['reproduced_mean']:.2f} ± {line['reproduced_std']:.2f}"
    return f"{line['reproduced_mean']:.2f}"


def _delta_cell(line: pd.Series) -> str:
    """Δ with its verdict against the reported number: ✓ within max(0.5, the 95 % half-width), ↑/↓ outside."""
    if pd.isna(line["delta"]):
        return "—"
    mark = {stats.WITHIN: " ✓", stats.ABOVE: " ↑", stats.BELOW: " ↓"}.get(line.get("vs_reported", ""), "")
    return f"{line['delta']:+.2f}{mark}"


def display(comparison: pd.DataFrame) -> pd.DataFrame:
    """The printed layout: one line per row; per metric ``reported | reproduced | Δ``; then ``n`` (seeds)."""
    metrics = list(dict.fromkeys(comparison["metric"]))
    # A metric the paper never reports (the demo's size bins and control classes) gets one column, ours.
    ours_only = {m for m in metrics if not (comparison.loc[comparison["metric"] == m, "reported_text"] != "").any()}
    lines = []
    for label, group in comparison.groupby("row", sort=False):
        line = {"": label}
        for metric in metrics:
            cell = group[group["metric"] == metric].iloc[0]
            if metric in ours_only:
                line[metric] = _reproduced_cell(cell)
                continue
            line[f"{metric} reported"] = cell["reported_text"] or "—"
            line[f"{metric} reproduced"] = _reproduced_cell(cell)
            line[f"{metric} Δ"] = _delta_cell(cell)
        line["n"] = int(group["n"].max())
        lines.append(line)
    return pd.DataFrame(lines)


# ---------------------------------------------------------------------------------------------- whole tables


def ours_label(profile: str) -> str:
    check_profile(profile)
    return "ours" if profile == "paper" else f"ours ({profile})"


def paper_rows(reported: pd.DataFrame, experiment: str) -> list[str]:
    """The row names of one reported experiment, in the paper's (the file's) order."""
    return list(dict.fromkeys(reported.loc[reported["experiment"] == experiment, "row"]))


def whole_metrics(reported: pd.DataFrame, sections: Sequence[Section], metrics: Sequence[str]) -> list[str]:
    """The columns of a whole table: the experiment's own metrics, then every other metric the paper's
    sections report (VOC's per-class IoU), in the file's order."""
    mine = reported[reported["experiment"].isin([s.experiment for s in sections])]
    return list(dict.fromkeys([*metrics, *mine["metric"]]))


def _metric_header(metric: str) -> str:
    return metric[len(CLASS_IOU_PREFIX):] if metric.startswith(CLASS_IOU_PREFIX) else metric


def _placement(rows: Sequence[TableRow], sections: Sequence[Section]) -> dict[tuple[str, str] | None, list]:
    """Where each reproduced row goes: after the paper row it reproduces. A row with no paper counterpart goes
    with the next row that has one (VOC's val stage before its test stage), or at the end of the table."""
    experiments = {s.experiment for s in sections}
    placed: dict[tuple[str, str] | None, list] = {}
    pending: list[TableRow] = []
    for row in rows:
        pending.append(row)
        if row.reported_experiment in experiments:
            placed.setdefault((row.reported_experiment, row.reported_row), []).extend(pending)
            pending = []
    placed.setdefault(None, []).extend(pending)
    return placed


def whole_table(comparison: pd.DataFrame, rows: Sequence[TableRow], reported: pd.DataFrame,
                sections: Sequence[Section], metrics: Sequence[str], headline: Sequence[str],
                profile: str) -> pd.DataFrame:
    """The paper's whole table with the reproduced rows inserted and marked.

    One column per metric holds the paper's value (paper rows) or the reproduced mean ± std (ours; "not run"
    when no run is behind it); ``Δ`` columns, for the ``headline`` metrics only, compare an ours row with the
    paper row it reproduces (paper profile); ``n`` counts seeds. A section column appears when the table has
    more than one part (VOC without / with COCO, ADE20K val / test).
    """
    ours = ours_label(profile)
    placed = _placement(rows, sections)
    lines = []

    def add(section: Section, method: str, backbone: str, source: str, cells: dict, deltas: dict, n: str):
        line = {"part": section.label} if len(sections) > 1 else {}
        line.update({"method": method, "backbone": backbone or "—", "source": source})
        for metric in metrics:
            line[_metric_header(metric)] = cells.get(metric, "—")
            if metric in headline:
                line[f"{_metric_header(metric)} Δ"] = deltas.get(metric, "—")
        line["n"] = n
        lines.append(line)

    def add_ours(section: Section, row: TableRow):
        mine = comparison[comparison["row"] == row.label].set_index("metric")
        ran = bool((mine["n"] > 0).any())
        cells, deltas = {}, {}
        for metric in metrics:
            cell = mine.loc[metric]
            if cell["status"] == "ok":
                cells[metric] = _reproduced_cell(cell)
            elif ran:
                cells[metric] = "—"  # the run has no such number (the demo's generated classes are not VOC's)
            else:
                # The reason ("test server") is given once, in the headline columns.
                cells[metric] = cell["status"] if metric in headline else NOT_RUN
            deltas[metric] = _delta_cell(cell)
        add(section, row.label, "", ours, cells, deltas, str(int(mine["n"].max())))

    for section in sections:
        entries = reported[reported["experiment"] == section.experiment]
        for name in paper_rows(reported, section.experiment):
            mine = entries[entries["row"] == name]
            cells = {m: format_reported(e) for m, e in ((r["metric"], r) for _, r in mine.iterrows())}
            add(section, name, mine["backbone"].iloc[0], "paper", cells, {}, "")
            for row in placed.get((section.experiment, name), []):
                add_ours(section, row)
    for row in placed.get(None, []):
        add_ours(sections[-1], row)
    return pd.DataFrame(lines)


def seed_values(results: pd.DataFrame, row: str, metric: str) -> dict[int, float]:
    """``{seed: value}`` of one row and metric (``runlogs.collect_results`` output)."""
    mine = results[(results["row"] == row) & (results["metric"] == metric)]
    return {int(s): float(v) for s, v in zip(mine["seed"], mine["value"])}


def direction_record(claim: str, metric: str, better: dict[int, float], worse: dict[int, float],
                     reported_gap: float = float("nan"), controls_min: float | None = None) -> dict:
    """One line of ``*_directions.csv``: the paired 95 % interval of ``better − worse`` over shared seeds and its
    verdict (``encnet.report.stats``). ``controls_min`` is the lowest control-class IoU (mean over seeds) of either
    arm, NaN when a control was not measured, None when the claim has no controls; below ``CONTROL_MIN_IOU`` (or
    unmeasured) the verdict is inconclusive whatever the interval."""
    interval = stats.paired_interval(better, worse)
    controls_ok = controls_min is None or (not pd.isna(controls_min) and controls_min >= CONTROL_MIN_IOU)
    verdict = stats.direction_verdict(interval, preconditions_met=controls_ok)
    note = ""
    if interval.n == 0:
        verdict, note = "not run", "no seed ran in both arms"
    elif not controls_ok and pd.isna(controls_min):
        note = "controls not measured (no per-class IoU in the runs' eval records)"
    elif not controls_ok:
        note = f"controls not learned (lowest control IoU {controls_min:.1f} < {CONTROL_MIN_IOU:g})"
    elif interval.n < 2:
        note = "one paired seed: no interval"
    return {"claim": claim, "metric": metric, "reported_gap": reported_gap, "reproduced_gap": interval.mean,
            "ci_low": interval.low, "ci_high": interval.high, "n_pairs": interval.n, "interval": stats.INTERVAL_METHOD,
            "controls_min": float("nan") if controls_min is None else controls_min, "verdict": verdict,
            "note": note}


def direction_checks(comparison: pd.DataFrame, directions: Sequence[Direction],
                     results: pd.DataFrame) -> pd.DataFrame:
    """For each claim: the paper's gap (better − worse), the paired reproduced gap with its 95 % interval over
    seeds, and the verdict (reproduced / contradicted / inconclusive; see ``encnet.report.stats``)."""
    records = []
    for d in directions:
        def reported(label: str) -> float:
            hit = comparison[(comparison["row"] == label) & (comparison["metric"] == d.metric)]
            return float(hit["reported"].iloc[0]) if len(hit) else float("nan")

        controls = [float(pd.Series(list(seed_values(results, arm, c).values()), dtype=float).mean())
                    for arm in (d.better, d.worse) for c in d.controls]
        controls_min = None
        if controls:
            controls_min = float("nan") if any(pd.isna(c) for c in controls) else min(controls)
        records.append(direction_record(f"{d.better} > {d.worse} ({d.metric})", d.metric,
                                        seed_values(results, d.better, d.metric),
                                        seed_values(results, d.worse, d.metric),
                                        reported(d.better) - reported(d.worse), controls_min))
    return pd.DataFrame.from_records(records, columns=DIRECTION_COLUMNS)


def direction_note(check: pd.Series | dict, gap_sign: float = 1.0) -> str:
    """The footnote of one direction check; ``gap_sign`` −1 prints the gap as worse − better (error tables)."""
    paper = "—" if pd.isna(check["reported_gap"]) else f"{gap_sign * check['reported_gap']:+.2f}"
    if check["verdict"] == "not run":
        return f"Direction {check['claim']}: paper {paper}; reproduced: not run."
    lo, hi = sorted((gap_sign * check["ci_low"], gap_sign * check["ci_high"]))
    interval = stats.format_interval(stats.Interval(gap_sign * check["reproduced_gap"], lo, hi,
                                                    int(check["n_pairs"])))
    note = f" ({check['note']})" if isinstance(check.get("note"), str) and check["note"] else ""
    return (f"Direction {check['claim']}: paper {paper}, reproduced {interval} ({stats.INTERVAL_METHOD} over "
            f"{int(check['n_pairs'])} paired seeds) → {check['verdict']}{note}.")


def _mean_std(values: pd.Series) -> str:
    if len(values) > 1:
        return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"
    return f"{values.iloc[0]:.2f}"


@dataclass(frozen=True)
class Learned:
    """A learning criterion written before the runs: an arm learned what a claim is about on a seed when
    ``metric`` ≥ ``threshold``; ``required`` arms must do so on at least ``share`` of their seeds."""

    metric: str
    threshold: float
    share: float
    required: tuple[str, ...]
    what: str  # e.g. "read the scene"


def learning_note(results: pd.DataFrame, labels: Sequence[str], criterion: Learned) -> str | None:
    """Per row: on how many seeds ``criterion.metric`` ≥ threshold, and whether the required arms met the share."""
    if results is None or results.empty:
        return None
    shown, missed = [], []
    for label in labels:
        mine = results[(results["row"] == label) & (results["metric"] == criterion.metric)]
        if mine.empty:
            continue
        values = mine.sort_values("seed")["value"].astype(float)
        hits = int((values >= criterion.threshold).sum())
        shown.append(f"{label} {hits}/{len(values)}")
        if label in criterion.required and hits < criterion.share * len(values):
            missed.append(label)
    if not shown:
        return None
    verdict = ("met" if not missed else "not met by " + ", ".join(missed))
    return (f"Learning criterion (written before the runs): an arm {criterion.what} on a seed when "
            f"{criterion.metric} ≥ {criterion.threshold:g}; {', '.join(criterion.required)} must on ≥ "
            f"{criterion.share:.0%} of seeds — {verdict}. Seeds that did: " + "; ".join(shown) + ".")


def best_validation_note(best: pd.DataFrame, labels: Sequence[str]) -> str | None:
    """The release's checkpoint selection beside the table's last-epoch numbers (ledger: checkpoint_selection).

    ``best`` is ``runlogs.collect_best_validation`` output. Per row of ``labels``: mean ± sample std over seeds
    of the best epoch's pixAcc and mIoU, and the range of the epochs the seeds chose (each seed's epoch is in the
    CSV, :func:`best_epochs_by_row`). Rows without logged validation are left out; ``None`` when no row has any,
    so tables of runs that never logged it are unchanged.
    """
    shown = []
    for label in labels:
        mine = best[best["row"] == label]
        if mine.empty:
            continue
        first, last = int(mine["best_val_epoch"].min()), int(mine["best_val_epoch"].max())
        of = int(mine["epochs"].max())
        chosen = ("the last epoch on every seed" if first == last == of
                  else f"epoch {first} of {of}" if first == last else f"epochs {first}–{last} of {of}")
        shown.append(f"{label} pixAcc {_mean_std(mine['best_val_pixAcc'])}, mIoU {_mean_std(mine['best_val_mIoU'])} "
                     f"({chosen})")
    if not shown:
        return None
    return ("Best validation epoch, the release's checkpoint selection (largest (pixAcc + mIoU) / 2 of the "
            "single-scale monitoring on val; ledger entry checkpoint_selection); the table shows the last epoch. "
            "Each seed's epoch is in the CSV's best_val_epochs: " + "; ".join(shown) + ".")


def best_epochs_by_row(best: pd.DataFrame) -> dict[str, str]:
    """``{row: "seed:epoch;..."}``: each seed's best validation epoch, for the table's CSV."""
    return {row: ";".join(f"{int(r['seed'])}:{int(r['best_val_epoch'])}"
                          for _, r in group.sort_values("seed").iterrows())
            for row, group in best.groupby("row", sort=False)}


def footnotes(comparison: pd.DataFrame, checks: pd.DataFrame | None = None,
              notes: Sequence[str] = ()) -> list[str]:
    """Footnotes in print order: the table's own notes, direction checks, the dagger, the runs behind each row."""
    out = list(notes)
    if checks is not None:
        out += [direction_note(c) for _, c in checks.iterrows()]
    if (comparison["verified"] == "no").any():
        out.append(UNVERIFIED_FOOTNOTE)
    if (comparison["runs"].astype(str) != "").any():
        out.append("The runs behind each row (under the runs root) are in the CSV's runs column.")
    return out


def to_markdown(table: pd.DataFrame, title: str, caption: str, notes: Sequence[str]) -> str:
    body = tabulate(table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True)
    parts = [f"# {title}", "", caption, "", body, ""]
    parts += [f"- {note}" for note in notes]
    return "\n".join(parts).rstrip() + "\n"


_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "--", "→": r"$\to$", "≥": r"$\geq$", "✓": r"$\checkmark$",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "<": r"$<$",
                  UNVERIFIED_MARK: r"$^\dagger$"}


def _latex_text(text: str) -> str:
    text = text.replace("`", "")  # Markdown code marks
    for char, replacement in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                              ("#", r"\#"), ("$", r"\$")):
        text = text.replace(char, replacement)
    for char, replacement in _LATEX_SYMBOLS.items():
        text = text.replace(char, replacement)
    return text


def to_latex(table: pd.DataFrame, title: str, caption: str, notes: Sequence[str]) -> str:
    """A booktabs ``table`` environment; the footnotes go below the tabular as small text."""
    headers = [_latex_text(str(c)) for c in table.columns]
    cells = [[_latex_text(str(v)) for v in row] for row in table.itertuples(index=False)]
    spec = "l" + "r" * (len(headers) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_text(title)}. {_latex_text(caption)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(headers) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(r"\par\smallskip\footnotesize " + r" \\ ".join(_latex_text(n) for n in notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(comparison: pd.DataFrame, name: str, title: str, caption: str, profile: str,
                out_dir: str | Path, directions: Sequence[Direction] = (), notes: Sequence[str] = (),
                table: pd.DataFrame | None = None, results: pd.DataFrame | None = None) -> list[Path]:
    """Write ``<out_dir>/tables/<name>[_demo].{md,csv,tex}``; the CSV holds the tidy numbers behind the table.

    ``table`` is the printed layout (``whole_table``'s); by default ``display(comparison)``. ``results`` (the
    per-seed numbers behind ``comparison``) are needed for ``directions``: their intervals pair seeds.
    """
    if directions and results is None:
        raise ValueError("direction checks pair seeds: pass the per-seed results behind the comparison")
    stem = output_name(name, profile)
    title = output_title(title, profile)
    checks = direction_checks(comparison, directions, results) if directions else None
    notes = footnotes(comparison, checks, notes)
    shown = display(comparison) if table is None else table
    return write_table_files(shown, comparison, stem, title, caption, notes, out_dir, checks)


def write_table_files(table: pd.DataFrame, numbers: pd.DataFrame, stem: str, title: str, caption: str,
                      notes: Sequence[str], out_dir: str | Path, checks: pd.DataFrame | None = None) -> list[Path]:
    """``tables/<stem>.{md,tex}`` from the display ``table``, ``.csv`` from the tidy ``numbers`` behind it, and
    ``<stem>_directions.csv`` from the direction ``checks`` (read by run_all's summary)."""
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.md", folder / f"{stem}.csv", folder / f"{stem}.tex"]
    paths[0].write_text(to_markdown(table, title, caption, notes))
    numbers.to_csv(paths[1], index=False, float_format="%.4f")
    paths[2].write_text(to_latex(table, title, caption, notes))
    if checks is not None and len(checks):
        paths.append(write_directions(checks, stem, out_dir))
    return paths


def write_directions(checks: pd.DataFrame, stem: str, out_dir: str | Path) -> Path:
    """``tables/<stem>_directions.csv``: one line per direction check (read by run_all's summary)."""
    path = Path(out_dir) / "tables" / f"{stem}_directions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Six decimals, not the tables' four: the verdict block and run_all's summary print these at two, and a value
    # stored as 32.1650 prints as 32.16 where the figure, formatting the unrounded 32.16503, says 32.17.
    checks.to_csv(path, index=False, float_format="%.6f")
    return path
