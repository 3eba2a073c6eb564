"""``python -m study.report``: MLflow → the paper's tables and figures (md, csv, LaTeX, one HTML page).

Reads MLflow only, so it works for a study run anywhere against any tracking server. Writes to
``--out`` (default ``reports/<study id>``), prints the markdown and logs everything to the study's
parent run.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import sys
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from study.report.data import (
    ReportError,
    Study,
    data_root_of,
    datasets_in,
    figure_data,
    learning_curves,
    load_study,
    out_dir_for,
    reported_runs,
    row_order,
)
from study.report.depth import depth_grid, depth_tables, reference_cnn
from study.report.figures import (
    alignment_curves_figure,
    error_vs_depth_figure,
    fig2_aligned_examples,
    fig3_angle_plots,
    learning_curves_figure,
)
from study.report.seeds import did_not_learn, seeds_table
from study.report.tables import Table, accuracy_table, alignment_table, eq1_table, random_reference
from trainables.datasets import DEEP, dataset_spec
from trainables.outcome import Outcome

DEFAULT_PAIR = ("STN-SL1", "STN-C1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def to_markdown(table: Table) -> str:
    cells = table.cells.copy()
    if table.best is not None:
        cells = cells.mask(table.best, "**" + cells + "**")
    lines = [f"### {table.title}", "", cells.to_markdown(), ""]
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    cells = table.cells.copy().map(lambda s: s.replace("±", r"$\pm$").replace("—", "--").replace("†", r"$^\dagger$"))
    if table.best is not None:
        cells = cells.mask(table.best, r"\textbf{" + cells + "}")
    body = cells.style.to_latex(hrules=True, column_format="l" + "r" * len(cells.columns))
    notes = "\n".join(f"% {note}" for note in table.notes)
    return f"% {table.title}\n{notes}\n{body}"


def to_html(table: Table) -> str:
    cells = table.cells.copy().map(html.escape)
    if table.best is not None:
        cells = cells.mask(table.best, "<b>" + cells + "</b>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return f"<h2>{html.escape(table.title)}</h2>\n{cells.to_html(escape=False)}\n<ul>{notes}</ul>\n"


def html_page(study: Study, tables: list[Table], figures: list[Path]) -> str:
    images = []
    for path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        images.append(f"<figure><img src='data:image/png;base64,{data}'><figcaption>{path.name}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border-bottom:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f4f4f4}"
             "img{max-width:100%}figure{margin:1em 0}")
    body = "".join(to_html(t) for t in tables) + "<h2>Figures</h2>" + "".join(images)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(study.study_id)}</title>"
            f"<style>{style}</style></head><body><h1>Study {html.escape(study.study_id)}</h1>{body}</body></html>")


def representative(study: Study, dataset: str) -> dict[str, str]:
    """Per row, the run whose figures stand for it: first final seed, else the val-best search trial."""
    out = {}
    for row in row_order(study.runs["row"].unique()):
        chosen, _ = reported_runs(study.runs, dataset, row)
        if not chosen.empty:
            out[row] = chosen.sort_values("seed").iloc[0]["run_id"] if "seed" in chosen else chosen.iloc[0]["run_id"]
    return out


def alignment_curves(client: MlflowClient, runs, dataset: str) -> dict:
    """Per STN row of the dataset, the per-epoch val alignment of the runs its table cells report."""
    out = {}
    for row in row_order(runs["row"].unique()):
        chosen, _ = reported_runs(runs, dataset, row)
        if chosen.empty or row == "CNN":
            continue
        frames = [learning_curves(client, chosen, metric) for metric in ("val_angle_slope", "val_pose_sd")]
        frames = [f for f in frames if not f.empty]
        if frames:
            merged = frames[0]
            for other in frames[1:]:
                merged = merged.merge(other, on=["run_id", "cell", "stage", "seed", "epoch"], how="outer")
            out[row] = merged
    return out


def build_figures(client: MlflowClient, study: Study, out: Path, gaps: list[str] | None = None) -> list[Path]:
    """The report's figures; a panel whose data could not be fetched is left out and said in ``gaps``."""
    written = []
    for dataset in datasets_in(study.runs):
        panels = {}
        for row, run_id in representative(study, dataset).items():
            missing: list = []
            panels[row] = figure_data(client, run_id, missing)
            if missing and gaps is not None:
                gaps.append(f"{dataset} / {row} (run {run_id}): {missing[0][1]}")
        spec, stem = dataset_spec(dataset), dataset.removesuffix("-mnist")  # svhn-multi keeps its own files
        if spec.has_slope:
            written.append(fig3_angle_plots(out / f"fig3_angle_plots_{stem}.png",
                                            {k: v for k, v in panels.items() if k != "CNN"}))
        written.append(fig2_aligned_examples(out / f"fig2_aligned_{stem}.png", dataset, panels))
        written.append(alignment_curves_figure(out / f"alignment_vs_epoch_{stem}.png", dataset,
                                               alignment_curves(client, study.runs, dataset)))
        if spec.family == DEEP:
            written.append(error_vs_depth_figure(out / f"error_vs_depth_{stem}.png", dataset,
                                                 depth_grid(study.runs, dataset), reference_cnn(study.runs, dataset)[0]))
    curves = learning_curves(client, study.runs[study.runs["outcome"].isin([Outcome.COMPLETED, Outcome.PRUNED])])
    written.append(learning_curves_figure(out / "learning_curves.png", curves))
    return [p for p in written if p is not None]


def build_report(tracking_uri: str, wanted: str | None = None, out: str | None = None,
                 pair: tuple[str, str] = DEFAULT_PAIR, log_to_parent: bool = True, quiet: bool = False) -> Path:
    client = MlflowClient(tracking_uri)
    study = load_study(client, wanted)
    if study.runs.empty:
        raise ReportError(f"study {study.study_id} has no trial runs yet")
    directory = out_dir_for(study.study_id, out)
    directory.mkdir(parents=True, exist_ok=True)
    reference, reference_notes = random_reference(tuple((d, data_root_of(study.runs, d)) for d in datasets_in(study.runs)))
    alignment = alignment_table(study.runs, pair)
    failed_seeds = did_not_learn(study.runs)
    alignment.notes.insert(0, failed_seeds)  # seen beside the means, not only in the per-run table
    tables = [accuracy_table(study.runs, pair), alignment, seeds_table(study.runs), eq1_table(study.runs, reference, reference_notes),
              *depth_tables(study.runs)]
    markdown = [f"## Study {study.study_id} ({study.name})\n"]
    for table in tables:
        (directory / f"{table.name}.md").write_text(to_markdown(table))
        table.cells.to_csv(directory / f"{table.name}.csv")
        (directory / f"{table.name}.tex").write_text(to_latex(table))
        (directory / f"{table.name}.html").write_text(to_html(table))
        markdown.append(to_markdown(table))
    gaps: list[str] = []
    figures = build_figures(client, study, directory, gaps)
    if gaps:  # said, not silently drawn without them
        markdown.append("### Figure panels left out (their data could not be fetched)\n\n"
                        + "\n".join(f"- {gap}" for gap in gaps) + "\n")
        for gap in gaps:
            print(f"report: figure panel left out: {gap}", file=sys.stderr)
    (directory / "report.md").write_text("\n".join(markdown))
    (directory / "report.html").write_text(html_page(study, tables, figures))
    if not quiet:
        print("\n".join(markdown))
        print(failed_seeds)
        print(f"report written to {directory}")
    if log_to_parent:
        client.log_artifacts(study.parent_run_id, str(directory), "report")
    return directory


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.report", description=__doc__)
    p.add_argument("--study", help="study id or name (default: the latest study)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the local store under mlflow_artifacts/")
    p.add_argument("--out", help="output directory (default: reports/<study id>)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=list(DEFAULT_PAIR),
                   help="two variants to test for a difference beyond seed noise (default: STN-SL1 STN-C1)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the study's parent run")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from study.tracking.store import default_tracking_uri

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path.cwd() / "mlflow_artifacts")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        print(f"error: no tracking store at {uri}: run `python -m study.launch` first or pass --tracking-uri",
              file=sys.stderr)
        return 2
    try:
        build_report(uri, args.study, args.out, tuple(args.compare), log_to_parent=not args.no_log)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    sys.exit(main())
