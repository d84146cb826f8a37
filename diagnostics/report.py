"""One-page run report: ``RUN/report.html``, self-contained (images inlined as base64 PNG).

No server and no network: the page reads nothing but itself. It shows the health verdict with
its evidence (``health.json``), the skill table (``summary.json`` key ``skill``, when present),
loss and GAN-balance curves, and the latest image of each slice, spectrum, colorful-dimension
and dendrogram tag from the run's TensorBoard events, with links to the run's videos.

    python -m diagnostics.report RUN        # or: make report RUN=...
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from pathlib import Path

from .rundir import atomic_write_text

# Which scalar charts the page draws, in this order: (title, tag prefixes).
CURVES = (("Losses", ("loss/",)), ("GAN balance", ("gan/",)), ("Skill", ("skill/",)))
# Which image tags the page shows (latest step of each), in this order: (section, tag test).
IMAGES = (
    ("Latest slices", lambda t: t.startswith("slices/")),
    ("Spectra", lambda t: t.startswith(("spectrum/", "spectrum2d/")) or t == "values/figure"),
    ("Colorful dimension (activation histograms over steps)", lambda t: t.endswith("/colorful")),
    ("Dendrogram", lambda t: t.endswith("/dendrogram")),
)


class ReportError(RuntimeError):
    """The run directory cannot be reported on (missing, or not a run)."""


def _esc(x) -> str:
    return html.escape(str(x))


def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{b64}"><figcaption>{_esc(alt)}</figcaption></figure>'


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _curve_png(title: str, series: dict[str, list[tuple[int, float]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    for tag, pts in sorted(series.items()):
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="." if len(pts) < 30 else None,
            label=tag,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _verdict_html(run_dir: Path) -> str:
    p = run_dir / "health.json"
    if not p.is_file():
        return '<p class="verdict none" id="verdict">No health data: health.json is missing.</p>'
    h = json.loads(p.read_text())
    verdict = h.get("verdict", "no verdict recorded")
    cls = verdict.split(":", 1)[0].strip().lower().replace(" ", "-")
    out = [f'<p class="verdict {_esc(cls)}" id="verdict">{_esc(verdict)}</p>']
    alerts = h.get("alerts") or []
    if alerts:
        out.append('<table id="alerts"><tr><th>check</th><th>first step</th><th>last step</th>')
        out.append("<th>active</th><th>evidence</th></tr>")
        for a in alerts:
            out.append(
                f"<tr><td>{_esc(a.get('check'))}</td><td>{_esc(a.get('first_step'))}</td>"
                f"<td>{_esc(a.get('last_step'))}</td><td>{_esc(a.get('active'))}</td>"
                f"<td>{_esc(a.get('message'))}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append(f"<p>No alert in {_esc(h.get('n_updates', 0))} health updates.</p>")
    return "\n".join(out)


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else _esc(x)


def _skill_html(run_dir: Path) -> str:
    p = run_dir / "summary.json"
    skill = json.loads(p.read_text()).get("skill") if p.is_file() else None
    if not skill:
        why = "summary.json has no 'skill' key" if p.is_file() else "summary.json is missing"
        return f'<p id="skill-none">No skill data ({_esc(why)}).</p>'
    rows = [
        f"<p>At step {_esc(skill.get('step', '?'))}; mse_ratio = {_fmt(skill.get('mse_ratio', 'n/a'))} "
        "(model MSE / trilinear MSE; below 1 beats the baseline).</p>"
    ]
    per_var = {k: v for k, v in skill.items() if isinstance(v, dict)}
    cols = sorted({c for v in per_var.values() for c in v})
    rows.append(
        '<table id="skill"><tr><th>variable</th>'
        + "".join(f"<th>{_esc(c)}</th>" for c in cols)
        + "</tr>"
    )
    for name, vals in per_var.items():
        rows.append(
            f"<tr><td>{_esc(name)}</td>"
            + "".join(f"<td>{_fmt(vals.get(c, ''))}</td>" for c in cols)
            + "</tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def build_report(run_dir: str | Path) -> str:
    """The report page of ``run_dir`` as an HTML string."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise ReportError(
            f"{run_dir} is not a directory (RUN must be a run directory, e.g. outputs/gan/<run>)"
        )
    if not any(run_dir.glob("events.out.tfevents.*")) and not (run_dir / "health.json").is_file():
        raise ReportError(
            f"{run_dir} holds neither TensorBoard events nor health.json: not a run directory"
        )
    acc = _events(run_dir)
    tags = acc.Tags()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>fieldscope report: {_esc(run_dir.name)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
        "img{max-width:100%;image-rendering:pixelated}figure{display:inline-block;margin:.4em;vertical-align:top}"
        "figcaption{font-size:12px;color:#444}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 6px}"
        ".verdict{font-size:1.1em;padding:.5em;border-left:6px solid #888}.healthy{border-color:#2a2}"
        ".unhealthy{border-color:#c22}.recovered{border-color:#c90}</style></head><body>",
        f"<h1>Run report: {_esc(run_dir.name)}</h1><p><code>{_esc(run_dir)}</code></p>",
        "<h2>Health verdict</h2>",
        _verdict_html(run_dir),
        "<h2>Skill against the baseline</h2>",
        _skill_html(run_dir),
    ]
    for title, prefixes in CURVES:
        series = {
            t: [(e.step, e.value) for e in acc.Scalars(t)]
            for t in tags.get("scalars", [])
            if t.startswith(prefixes)
        }
        if series:
            parts += [f"<h2>{_esc(title)}</h2>", _img(_curve_png(title, series), title)]
    for title, test in IMAGES:
        sel = [t for t in tags.get("images", []) if test(t)]
        if not sel:
            continue
        parts.append(f"<h2>{_esc(title)}</h2>")
        for t in sel:
            last = acc.Images(t)[-1]
            parts.append(_img(last.encoded_image_string, f"{t} (step {last.step})"))
    videos = sorted((run_dir / "videos").glob("*.mp4")) if (run_dir / "videos").is_dir() else []
    parts.append("<h2>Videos</h2>")
    if videos:
        parts.append(
            "<ul>"
            + "".join(
                f'<li><a href="videos/{_esc(v.name)}">{_esc(v.name)}</a></li>' for v in videos
            )
            + "</ul>"
        )
    else:
        parts.append(f"<p>No videos yet: run <code>make video RUN={_esc(run_dir)}</code>.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` and return its path."""
    out = Path(run_dir) / "report.html"
    text = build_report(run_dir)
    atomic_write_text(text, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m diagnostics.report RUN``."""
    ap = argparse.ArgumentParser(
        prog="python -m diagnostics.report", description=__doc__.split("\n")[0]
    )
    ap.add_argument("run_dir", help="run directory (relative to the current directory or absolute)")
    args = ap.parse_args(argv)
    try:
        path = write_report(args.run_dir)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
