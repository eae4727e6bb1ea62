"""The `eval` chart: recall against bytes per chunk, as a PNG (matplotlib, the `plot` extra)."""

from __future__ import annotations

from pathlib import Path

from .errors import JinalocError

FAMILIES = {"float": "float32", "int8": "int8", "bits": "sign bits"}


def require_matplotlib() -> None:
    """A one-line error naming the extra when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise JinalocError(
            "plotting needs matplotlib", "install the plot extra: pip install 'jinaloc[plot]'"
        ) from None


def plot_recall(result, path: Path) -> None:
    """Recall@k (y) against bytes per chunk (x, log scale) of an `eval.Result`: one line per
    vector family through its dims, the rescoring factors as points, each search mode as a
    horizontal line (the lexical index's size is not measured)."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot()
    rows = result.rows
    for family, label in FAMILIES.items():
        points = sorted(
            (r.config.bytes_per_chunk, r.recall, r.config.dim)
            for r in rows
            if r.config.family == family
        )
        if not points:
            continue
        xs, ys, _ = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=label)
        for x, y, d in points:
            ax.annotate(str(d), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    rescore = [r for r in rows if r.config.family == "rescore"]
    if rescore:
        ax.scatter(
            [r.config.bytes_per_chunk for r in rescore],
            [r.recall for r in rescore],
            marker="x",
            color="black",
            label=f"bits→float32@{result.dim} (oversample)",
        )
        for n, r in enumerate(rescore):  # same bytes: labels stacked, not on top of each other
            ax.annotate(
                f"x{r.config.oversample}",
                (r.config.bytes_per_chunk, r.recall),
                textcoords="offset points",
                xytext=(6, -4 - 9 * n),
                fontsize=7,
            )
    styles = iter(["--", ":", "-.", (0, (5, 1))])
    colors = iter(["tab:purple", "tab:brown", "tab:gray", "tab:olive"])
    for r in rows:
        if r.config.family == "mode":
            ax.axhline(
                r.recall, linestyle=next(styles), color=next(colors), label=f"{r.config.name} mode"
            )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel("bytes per chunk")
    ax.set_ylabel(f"recall@{result.k}")
    ax.set_title(
        f"{result.model}, dim {result.dim}: {result.queries} queries, {result.chunks} chunks",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    try:
        fig.savefig(Path(path), format="png", dpi=120)
    except OSError as e:
        raise JinalocError(f"cannot write {path}: {e.strerror or e}") from None
