"""A self-contained HTML report of one or more run directories (inline SVG, no scripts, no CDN).

Reads whatever the run left: metrics.jsonl (rebuilding the error map from it when the .npy arrays
are missing, e.g. after a kill), components.json, summary.json, config.json. Missing pieces are
listed at the top of the page instead of failing.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from ..errors import UserError

W, H = 900, 220  # chart size (px)
CSS = ("body{font:14px sans-serif;margin:24px;color:#222}.chart{display:block;margin:8px 0 18px;"
       "background:#fafafa;border:1px solid #ddd}.t{font-weight:bold;font-size:13px}.a{font-size:11px;fill:#444}"
       ".ax{stroke:#999}.budget{stroke:#d00;stroke-dasharray:4 3}.missing{color:#a00}"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")


def _read_run(run: Path) -> dict:
    notes, steps, evals = [], [], []
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                notes.append("metrics.jsonl ends in a cut-off line (run interrupted)")
                continue
            (steps if rec.get("type") == "step" else evals if rec.get("type") == "eval" else []).append(rec)
    else:
        notes.append("metrics.jsonl missing: no per-step data")
    def load(name):
        p = run / name
        if not p.is_file():
            notes.append(f"{name} missing")
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            notes.append(f"{name} unreadable")
            return None
    power = load("power.json") if (run / "power.json").is_file() else None
    comps = load("components.json")
    summary = load("summary.json")
    config = load("config.json")
    emap = None
    if (run / "error_map.npy").is_file():
        emap = np.load(run / "error_map.npy", allow_pickle=False)
    elif steps:
        notes.append("error_map.npy missing: rebuilt from metrics.jsonl")
        emap = np.array([r["scores"] for r in steps], dtype=float)
    names = [c["name"] for c in comps["components"]] if comps else \
        [f"c{i}" for i in range(emap.shape[1])] if emap is not None else []
    return {"run": run, "notes": notes, "steps": steps, "evals": evals, "summary": summary or {},
            "config": config or {}, "emap": emap, "names": names, "power": power}


def _esc(x) -> str:
    return html.escape(str(x))


def line_chart(series: list[tuple[str, list[float], list[float], str]], title: str, hline=None,
               legend: bool = True, x_label: str = "") -> str:
    pts = [(x, y) for _, xs, ys, _ in series for x, y in zip(xs, ys) if np.isfinite(y)]
    if not pts:
        return f'<p class="missing">{_esc(title)}: no data</p>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts) or 1
    ys = [p[1] for p in pts] + ([hline[0]] if hline else [])
    y0, y1 = min(ys), max(ys)
    y1 = y1 if y1 > y0 else y0 + 1
    sx = lambda x: 50 + (x - x0) / max(1e-9, x1 - x0) * (W - 60)  # noqa: E731
    sy = lambda y: H - 25 - (y - y0) / (y1 - y0) * (H - 45)  # noqa: E731
    parts = [f'<svg class="chart" width="{W}" height="{H}" role="img" aria-label="{_esc(title)}">',
             f'<text x="50" y="14" class="t">{_esc(title)}</text>',
             f'<text x="4" y="{sy(y1) + 4:.0f}" class="a">{y1:.3g}</text><text x="4" y="{sy(y0):.0f}" class="a">{y0:.3g}</text>',
             f'<line x1="50" y1="{H - 25}" x2="{W - 10}" y2="{H - 25}" class="ax"/>']
    for label, xs, ys_, color in series:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys_) if np.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"><title>{_esc(label)}</title></polyline>')
        if len(xs) <= 40:  # sparse series (evaluations): mark every point
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>'
                      for x, y in zip(xs, ys_) if np.isfinite(y)]
    if hline:
        parts.append(f'<line x1="50" x2="{W - 10}" y1="{sy(hline[0]):.1f}" y2="{sy(hline[0]):.1f}" class="budget"/>'
                     f'<text x="{W - 200}" y="{sy(hline[0]) - 4:.0f}" class="a">{_esc(hline[1])}</text>')
    if x_label:
        parts.append(f'<text x="{W - 10}" y="{H - 8}" text-anchor="end" class="a">{_esc(x_label)}: '
                     f'{x0:.3g} .. {x1:.3g}</text>')
    if legend:
        keys = "".join(f'<tspan fill="{c}"> ■ {_esc(label)}</tspan>' for label, _, _, c in series)
        parts.append(f'<text x="{W - 420}" y="14" class="a">{keys}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _heatmap(emap: np.ndarray, names: list[str], selected: list[list[int]]) -> str:
    steps, k = emap.shape
    cols = min(steps, 300)
    idx = np.linspace(0, steps - 1, cols).astype(int)
    m = emap[idx].T
    norm = m / np.maximum(m.max(axis=0, keepdims=True), 1e-12)  # per step: share of the largest
    cw, ch, left = (W - 170) / cols, max(6, min(18, 400 / max(1, k))), 160
    out = [f'<svg class="chart heat" width="{W}" height="{k * ch + 40}" role="img" aria-label="error map">',
           '<text x="160" y="14" class="t">error map (EMA score / max per step; dots: trained)</text>']
    for i, name in enumerate(names[:k]):
        y = 24 + i * ch
        out.append(f'<text x="2" y="{y + ch * 0.8:.1f}" class="a">{_esc(name[-26:])}</text>')
        for j in range(cols):
            v = float(norm[i, j])
            out.append(f'<rect x="{left + j * cw:.1f}" y="{y:.1f}" width="{cw + 0.3:.1f}" height="{ch:.1f}" '
                       f'fill="rgb({int(255 * v)},{int(80 + 100 * (1 - v))},{int(255 * (1 - v))})"/>')
    for j, s in enumerate(idx):
        if s < len(selected):
            for i in selected[s]:
                out.append(f'<circle cx="{left + (j + 0.5) * cw:.1f}" cy="{24 + (i + 0.5) * ch:.1f}" r="1.2" fill="#fff"/>')
    out.append("</svg>")
    return "".join(out)


def _bars(values: list[float], names: list[str], title: str) -> str:
    if not values:
        return f'<p class="missing">{_esc(title)}: no data</p>'
    top = max(values) or 1
    bh = 16
    out = [f'<svg class="chart" width="{W}" height="{len(values) * bh + 30}" role="img" aria-label="{_esc(title)}">',
           f'<text x="160" y="14" class="t">{_esc(title)}</text>']
    for i, (v, n) in enumerate(zip(values, names)):
        y = 22 + i * bh
        out.append(f'<text x="2" y="{y + 12}" class="a">{_esc(n[-26:])}</text>'
                   f'<rect x="160" y="{y}" width="{(W - 220) * v / top:.1f}" height="{bh - 3}" fill="#4a7bd0"/>'
                   f'<text x="{165 + (W - 220) * v / top:.1f}" y="{y + 12}" class="a">{v:.0%}</text>')
    out.append("</svg>")
    return "".join(out)


# (summary key, label, scale to the unit in the label): human units, not bytes and kilograms
SUMMARY_KEYS = [("held_out_accuracy", "held-out accuracy", 1), ("steps", "steps", 1), ("stop_reason", "stop", 1),
                ("mean_components_updated_per_step", "components / step", 1),
                ("median_step_time_s", "median step (ms)", 1e3), ("energy_j", "energy (J)", 1),
                ("energy_wh", "energy (Wh)", 1), ("energy_source", "energy source", 1),
                ("avg_power_w", "avg power (W)", 1), ("co2_kg", "CO2e (g)", 1e3),
                ("peak_rss_bytes", "peak RSS (MB)", 1e-6)]

COLORS = ["#d0493a", "#2f7d32", "#4a7bd0", "#8a4fc0", "#c08a1f"]


def render(runs: list[str | Path]) -> str:
    data = [_read_run(Path(r)) for r in runs]
    body = [f"<h1>RGFT run report</h1><p>{len(data)} run(s): " +
            ", ".join(_esc(d['run'].name) for d in data) + "</p>"]
    # summary table, runs side by side
    rows = "".join(f"<tr><th>{_esc(label)}</th>" + "".join(
        f"<td>{_esc(_fmt(d['summary'].get(k), scale))}</td>" for d in data) + "</tr>" for k, label, scale in SUMMARY_KEYS)
    body.append("<h2>Summary</h2><table><tr><th></th>" + "".join(f"<th>{_esc(d['run'].name)}</th>" for d in data)
                + f"</tr>{rows}</table>")
    for d in data:
        if d["notes"]:
            body.append(f'<p class="missing">{_esc(d["run"].name)}: ' + "; ".join(_esc(n) for n in d["notes"]) + "</p>")
    curves = lambda key: [(d["run"].name, [r["step"] for r in d["steps"]], [float(r.get(key, np.nan)) for r in d["steps"]],  # noqa: E731
                           COLORS[i % len(COLORS)]) for i, d in enumerate(data)]
    body.append("<h2>Loss, held-out metric, step time</h2>")
    body.append(line_chart(curves("loss"), "training loss"))
    ev = [(d["run"].name, [r["step"] for r in d["evals"]], [float(r.get("accuracy", r.get("loss", np.nan))) for r in d["evals"]],
           COLORS[i % len(COLORS)]) for i, d in enumerate(data)]
    subset = any("_subset" in str(r.get("split", "")) for d in data for r in d["evals"])
    body.append(line_chart(ev, "held-out accuracy (or loss)" + (
        " (a fixed subset; last point: all of it)" if subset else "")))
    body.append(line_chart([(n, xs, [y * 1000 for y in ys], c) for n, xs, ys, c in curves("step_time_s")], "step time (ms)"))
    mem_budget = next((d["summary"].get("memory_budget_bytes") for d in data if d["summary"].get("memory_budget_bytes")), None)
    body.append(line_chart([(n, xs, [y / 1e6 for y in ys], c) for n, xs, ys, c in curves("rss_bytes")],
                            "RSS (MB)", (mem_budget / 1e6, "memory budget") if mem_budget else None))
    for d in data:
        p = d["power"]
        if not p or not p.get("samples"):
            continue
        t = [s[0] for s in p["samples"]]
        w = [s[1] for s in p["samples"]]
        joules = np.concatenate([[0.0], np.cumsum(np.diff(t) * (np.array(w[1:]) + np.array(w[:-1])) / 2)]).tolist()
        body.append(f"<h2>{_esc(d['run'].name)}: power [{_esc(p.get('source'))}]</h2>")
        body.append(line_chart([("power (W)", t, w, "#c08a1f")], "power (W) over time (s)"))
        budget = p.get("energy_budget_j")
        body.append(line_chart([("energy (J)", t, joules, "#8a4fc0")], "energy spent (J) over time (s)",
                                (budget, "energy budget") if budget else None))
    for d in data:
        body.append(f"<h2>{_esc(d['run'].name)}: error map and selection</h2>")
        if d["emap"] is None or not len(d["emap"]):
            body.append('<p class="missing">no error map</p>')
            continue
        selected = [r["selected"] for r in d["steps"]]
        body.append(_heatmap(d["emap"], d["names"], selected))
        k = d["emap"].shape[1]
        freq = [sum(i in s for s in selected) / max(1, len(selected)) for i in range(k)]
        body.append(_bars(freq, d["names"], "how often each component was trained"))
        mult = [[r.get("lr_mult", {}).get(str(i), 0.0) for i in range(k)] for r in d["steps"]]
        if mult and np.asarray(mult).max() > 0:
            body.append(_heatmap(np.asarray(mult, float), d["names"], []).replace(
                "error map (EMA score / max per step; dots: trained)", "learning-rate multiplier over time"))
    return f"<!doctype html><html><head><meta charset='utf-8'><title>RGFT report</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>"


def _fmt(v, scale: float = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, float)) and not isinstance(v, bool) and scale != 1:
        v = float(v) * scale
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json")


def write_report(runs: list[str | Path], out: str | Path) -> Path:
    """Render the runs into one HTML file; UserError when a directory holds no run."""
    for r in runs:
        if not Path(r).is_dir():
            raise UserError(f"run directory not found: {r}")
        if not any((Path(r) / name).is_file() for name in RUN_FILES):
            raise UserError(f"{r}: no rgft-edge run here (none of {', '.join(RUN_FILES)})")
    out = Path(out)
    out.write_text(render(runs), encoding="utf-8")
    return out
