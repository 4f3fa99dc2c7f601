"""``quiver monitor report --out report.html``: one self-contained HTML page.

No script, no stylesheet or font to fetch: the charts are inline SVG drawn
here from the results and profiles kept in the registry. Per view: freshness
against the SLA over time, the null rate of each feature over time, and each
drifting feature's histogram against its reference.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quiver.monitoring.results import FAILING, ResultStore

__all__ = ["write_report", "render_report"]

W, H, PAD = 420, 150, 34
COLORS = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c")
CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#1a202c;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #cbd5e0;padding-bottom:4px;margin-top:32px}
h3{font-size:14px;margin:14px 0 4px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #e2e8f0;padding:3px 8px;text-align:left;font-size:13px}
.failing{color:#c53030;font-weight:600}.ok{color:#2f855a}.info{color:#718096}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e2e8f0;padding:6px}
svg text{font:10px system-ui,sans-serif;fill:#4a5568}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _t(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def line_chart(title: str, series: dict[str, list[tuple[str, float | None]]], threshold: float | None = None,
               unit: str = "") -> str:
    """A small line chart over time; the threshold as a dashed red line."""
    pts = [(_t(t), v) for rows in series.values() for t, v in rows if v is not None]
    if not pts:
        return f'<div class="chart"><h3>{_e(title)}</h3><p class="info">no values yet</p></div>'
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + ([threshold] if threshold is not None else [])
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.1 or 1.0

    def sx(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (W - PAD - 8)

    def sy(y: float) -> float:
        return H - 18 - (y - y0) / (y1 - y0) * (H - 30)

    parts = [f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{_e(title)}">',
             f'<line x1="{PAD}" y1="{H - 18}" x2="{W - 8}" y2="{H - 18}" stroke="#a0aec0"/>',
             f'<line x1="{PAD}" y1="12" x2="{PAD}" y2="{H - 18}" stroke="#a0aec0"/>',
             f'<text x="2" y="{sy(y1) + 4:.1f}">{_num(y1)}{unit}</text><text x="2" y="{H - 18:.1f}">{_num(y0)}</text>',
             f'<text x="{PAD}" y="{H - 4}">{_e(datetime.fromtimestamp(x0, UTC).strftime("%m-%d %H:%M"))}</text>',
             f'<text x="{W - 8}" y="{H - 4}" text-anchor="end">'
             f'{_e(datetime.fromtimestamp(x1, UTC).strftime("%m-%d %H:%M"))}</text>']
    if threshold is not None:
        parts.append(f'<line x1="{PAD}" y1="{sy(threshold):.1f}" x2="{W - 8}" y2="{sy(threshold):.1f}" '
                     f'stroke="#e53e3e" stroke-dasharray="4 3"><title>threshold {_num(threshold)}</title></line>')
    for i, (label, rows) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        xy = [(sx(_t(t)), sy(v)) for t, v in rows if v is not None]
        if len(xy) > 1:
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy) + '"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{c}"/>' for x, y in xy[-50:]]
        parts.append(f'<text x="{W - 10}" y="{14 + 12 * i}" text-anchor="end" style="fill:{c}">{_e(label)}</text>')
    parts.append("</svg>")
    return f'<div class="chart"><h3>{_e(title)}</h3>{"".join(parts)}</div>'


def histogram_chart(title: str, labels: list[str], ref: Sequence[float], cur: Sequence[float]) -> str:
    """Reference (grey) and current (blue) shares per bin, side by side."""
    tr, tc = sum(ref) or 1.0, sum(cur) or 1.0
    r, c = [x / tr for x in ref], [x / tc for x in cur]
    top = max(r + c + [1e-9])
    n = len(labels)
    bw = (W - PAD - 8) / max(n, 1)
    parts = [f'<svg width="{W}" height="{H + 20}" viewBox="0 0 {W} {H + 20}" role="img" aria-label="{_e(title)}">',
             f'<line x1="{PAD}" y1="{H - 18}" x2="{W - 8}" y2="{H - 18}" stroke="#a0aec0"/>',
             f'<text x="2" y="16">{top:.0%}</text>',
             f'<text x="{W - 10}" y="12" text-anchor="end" style="fill:#718096">reference</text>',
             f'<text x="{W - 10}" y="24" text-anchor="end" style="fill:#2b6cb0">current</text>']
    for i, lab in enumerate(labels):
        x = PAD + i * bw
        for j, (share, color) in enumerate(((r[i], "#a0aec0"), (c[i], "#2b6cb0"))):
            h = share / top * (H - 36)
            parts.append(f'<rect x="{x + 1 + j * bw / 2:.1f}" y="{H - 18 - h:.1f}" width="{max(bw / 2 - 1, 1):.1f}" '
                         f'height="{h:.1f}" fill="{color}"><title>{_e(lab)}: {share:.1%}</title></rect>')
        if n <= 12:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{H - 6}" text-anchor="middle">{_e(lab)[:9]}</text>')
    parts.append("</svg>")
    return f'<div class="chart"><h3>{_e(title)}</h3>{"".join(parts)}</div>'


def _bins(ref: dict[str, Any], cur: dict[str, Any]) -> tuple[list[str], Sequence[float], Sequence[float]]:
    if ref.get("kind") == "number":
        from quiver.monitoring.drift import coarsen

        edges, dec = ref.get("edges", []), ref.get("decile_edges", [])
        r, c = coarsen(ref.get("hist", []), edges, dec), coarsen(cur.get("hist", []), edges, dec)
        labels = [f"≤{_num(e)}" for e in dec] + [f">{_num(dec[-1])}" if dec else "all"]
        return labels, r, c
    labels = [v for v, _ in ref.get("top", [])] + ["other"]
    return labels, [n for _, n in ref.get("top", [])] + [ref.get("other", 0)], \
        [n for _, n in cur.get("top", [])] + [cur.get("other", 0)]


def render_report(registry: Any, views: Sequence[str] | None = None) -> str:
    rs = ResultStore(registry)
    current = rs.current(views)
    names = sorted({r.view for r in current})
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    last = rs.last_run()
    failing = [r for r in current if r.status == FAILING]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>quiver monitor report</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>quiver monitor report</h1><p>written {now}; last check run "
           f"{_e(last.isoformat() if last else 'never')}; {len(current)} checks, "
           f"<span class='{'failing' if failing else 'ok'}'>{len(failing)} failing</span></p>"]
    if failing:
        out.append("<table><tr><th>view</th><th>feature</th><th>check</th><th>value</th><th>threshold</th>"
                   "<th>detail</th></tr>")
        out += [f"<tr class='failing'><td>{_e(r.view)}</td><td>{_e(r.feature)}</td><td>{_e(r.check)}</td>"
                f"<td>{_num(r.value)}</td><td>{_num(r.threshold)}</td><td>{_e(r.detail)}</td></tr>" for r in failing]
        out.append("</table>")
    for view in names:
        out.append(f"<h2>{_e(view)}</h2>")
        hist = rs.history(view)
        mine = [r for r in current if r.view == view]
        fresh = {k.split(":", 1)[1]: v for k, v in hist.items() if k.startswith(":") and k.endswith(
            ("freshness_online", "freshness_offline"))}
        sla = next((r.threshold for r in mine if r.check.startswith("freshness") and r.threshold), None)
        out.append("<div class='charts'>")
        out.append(line_chart("freshness: age of the newest value (s)" + (f", SLA {_num(sla)}s" if sla else ", no SLA"),
                              {k: [(x["time"], x["value"]) for x in v] for k, v in fresh.items()}, sla))
        for key, rows in hist.items():
            feat, _, check = key.partition(":")
            if check == "null_rate":
                th = rows[-1]["threshold"] if rows else None
                out.append(line_chart(f"{feat}: null rate", {"null rate": [(x["time"], x["value"]) for x in rows]}, th))
        out.append("</div>")
        profiles = rs.profiles(view)
        drifting = sorted({r.feature for r in mine if r.check in ("psi", "ks", "js") and r.status == FAILING})
        if drifting:
            out.append("<h3>drifting features: histogram against the reference</h3><div class='charts'>")
            for feat in drifting:
                p = profiles.get(feat) or {}
                if p.get("reference") and p.get("current"):
                    labels, r, c = _bins(p["reference"], p["current"])
                    stats = ", ".join(f"{x.check.upper()} {_num(x.value)}" for x in mine
                                      if x.feature == feat and x.check in ("psi", "ks", "js"))
                    out.append(histogram_chart(f"{feat} ({stats})", labels, r, c))
            out.append("</div>")
        out.append("<table><tr><th>feature</th><th>check</th><th>value</th><th>threshold</th><th>status</th>"
                   "<th>detail</th></tr>")
        out += [f"<tr><td>{_e(r.feature)}</td><td>{_e(r.check)}</td><td>{_num(r.value)}</td>"
                f"<td>{_num(r.threshold)}</td><td class='{r.status}'>{r.status}</td><td>{_e(r.detail)}</td></tr>"
                for r in mine]
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(registry: Any, out: str | Path, views: Sequence[str] | None = None) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(registry, views), encoding="utf-8")
    return path
