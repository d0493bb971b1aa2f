"""An experiment's tables or figures, built from its run folders and ``reported.csv`` only: ``--from-logs``
rebuilds them without training."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from encnet.experiments.execution import eval_tag_for
from encnet.experiments.experiment import Experiment
from encnet.experiments.planning import PlannedRun


def result_refs(experiment: Experiment, by_row: dict[tuple[str, int], PlannedRun],
                seeds: Sequence[int]) -> list[tuple[str, Path, str]]:
    """(row label, run folder, eval tag) for every row and seed whose number is shown."""
    return [(row.label, by_row[(row.label, seed)].run_dir, eval_tag_for(row, by_row[(row.label, seed)]))
            for row in experiment.rows if row.config is not None and row.not_run_reason is None
            for seed in row.seeds(seeds)]


def write_outputs(experiment: Experiment, profile: str, refs: Sequence[tuple[str, str | Path, str]],
                  runs_root: str | Path, out_dir: str | Path, reported_csv: str | Path | None = None) -> list[Path]:
    """Tables or figures from run folders and reported.csv only (no training code runs here)."""
    from encnet.report import figures, runlogs, tables
    from encnet.report.reported import REPORTED_CSV, load_reported

    results = runlogs.collect_results(refs, runs_root)
    reported = load_reported(reported_csv or REPORTED_CSV)
    if experiment.figure is not None:
        spec = dict(experiment.figure)
        curve = spec.pop("paper_curve", None)
        paper = figures.paper_points(reported, curve, experiment.metrics) if curve else None
        points = figures.sweep_points(results, {r.label: r.x for r in experiment.rows}, experiment.metrics, profile)
        checks = None
        if experiment.directions:
            at_x = {r.label: r.x for r in experiment.rows}
            checks = tables.direction_checks(figures.paper_at_rows(paper, at_x), experiment.directions, results)
        paths = figures.plot_sweep(points, experiment.name, experiment.title, profile=profile, out_dir=out_dir,
                                   paper=paper, checks=checks, **spec)
        if checks is not None:
            paths.append(tables.write_directions(checks, tables.output_name(experiment.name, profile), out_dir))
        return paths
    rows = [tables.TableRow(r.label, *(r.reported or (None, None)), not_run_reason=r.not_run_reason,
                            comparable=r.comparable) for r in experiment.rows]
    metrics = (tables.whole_metrics(reported, experiment.sections, experiment.metrics) if experiment.sections
               else list(experiment.metrics))
    comparison = tables.compare(rows, metrics, reported, results, profile)
    table = (tables.whole_table(comparison, rows, reported, experiment.sections, metrics, experiment.metrics,
                                profile) if experiment.sections else None)
    best_runs = runlogs.collect_best_validation(refs, runs_root)
    best = tables.best_validation_note(best_runs, [r.label for r in experiment.rows])
    if best is not None:
        comparison = comparison.assign(best_val_epochs=comparison["row"].map(tables.best_epochs_by_row(best_runs))
                                       .fillna(""))
    learned = (tables.learning_note(results, [r.label for r in experiment.rows], experiment.learned)
               if experiment.learned is not None else None)
    return tables.write_table(comparison, experiment.name, experiment.title, experiment.caption.strip(), profile,
                              out_dir, experiment.directions, notes=[n for n in (learned, best) if n], table=table,
                              results=results)
