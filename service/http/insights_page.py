"""The insights page as server-made HTML with plain SVG plots: no script, no chart library."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from service.usage.insights import InsightsOut

PERIODS = (7, 30, 90)
W, H, PAD_L, PAD_B, PAD_T = 440, 170, 58, 24, 10
FONT = 14  # in viewBox units: about 11 px at 375 px wide, 20 px at the widest
ANSWERED, DECLINED, HELPFUL, UNHELPFUL, P50, P95 = (
    "#1f55c4", "#c76a00", "#1d7a3e", "#b3261e", "#1f55c4", "#7b3fb0")


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def _frame(title: str, desc: str, top: float, unit: str, days: Sequence[str],
           body: list[str], legend: Sequence[tuple[str, str]]) -> str:
    """An SVG with a y scale from 0 to `top`, first and last day under the x axis, a legend."""
    plot_h = H - PAD_B - PAD_T
    parts = [f'<svg viewBox="0 0 {W} {H + 22}" role="img" aria-labelledby="{_e(title)}-t">',
             f'<title id="{_e(title)}-t">{_e(desc)}</title>']
    for frac in (0.0, 0.5, 1.0):
        y = PAD_T + plot_h * (1 - frac)
        parts.append(f'<line x1="{PAD_L}" x2="{W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d5dae1"/>')
        value = top * frac
        label = f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
        parts.append(f'<text x="{PAD_L - 6}" y="{y + 5:.1f}" text-anchor="end" '
                     f'font-size="{FONT}" fill="#4a5260">{label}{_e(unit)}</text>')
    parts.extend(body)
    if days:
        parts.append(f'<text x="{PAD_L}" y="{H - 4}" font-size="{FONT}" fill="#4a5260">'
                     f'{_e(days[0])}</text>')
        parts.append(f'<text x="{W}" y="{H - 4}" font-size="{FONT}" fill="#4a5260" '
                     f'text-anchor="end">{_e(days[-1])}</text>')
    x = PAD_L
    for colour, name in legend:
        parts.append(f'<rect x="{x}" y="{H + 7}" width="13" height="13" fill="{colour}"/>')
        parts.append(f'<text x="{x + 18}" y="{H + 19}" font-size="{FONT}" fill="#1b1f24">'
                     f'{_e(name)}</text>')
        x += 30 + 8 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def stacked_bars(title: str, desc: str, days: Sequence[str],
                 series: Sequence[tuple[str, str, Sequence[int]]]) -> str:
    """Bars per day, the series stacked bottom up."""
    totals = [sum(s[2][i] for s in series) for i in range(len(days))]
    top = float(max([*totals, 1]))
    plot_h, n = H - PAD_B - PAD_T, max(len(days), 1)
    step = (W - PAD_L) / n
    width = max(step * 0.8, 1.0)
    body = []
    for i in range(len(days)):
        y = float(PAD_T + plot_h)
        for colour, _, values in series:
            h = plot_h * values[i] / top
            if h > 0:
                y -= h
                body.append(f'<rect x="{PAD_L + i * step + (step - width) / 2:.1f}" '
                            f'y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" '
                            f'fill="{colour}"/>')
    return _frame(title, desc, top, "", days, body, [(c, name) for c, name, _ in series])


def lines(title: str, desc: str, days: Sequence[str],
          series: Sequence[tuple[str, str, Sequence[float | None]]], unit: str) -> str:
    """A line per series; a day without a value breaks the line."""
    values = [v for _, _, vs in series for v in vs if v is not None]
    top = max([*values, 1.0]) * 1.1
    plot_h, n = H - PAD_B - PAD_T, max(len(days), 1)
    step = (W - PAD_L) / n
    body = []
    for colour, _, vs in series:
        run: list[str] = []
        for i, v in enumerate([*vs, None]):
            if v is not None:
                run.append(f"{PAD_L + (i + 0.5) * step:.1f},{PAD_T + plot_h * (1 - v / top):.1f}")
                continue
            if len(run) == 1:
                cx, cy = run[0].split(",")
                body.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
            elif run:
                body.append(f'<polyline points="{" ".join(run)}" fill="none" '
                            f'stroke="{colour}" stroke-width="2"/>')
            run = []
    return _frame(title, desc, top, " ms", days, body, [(c, name) for c, name, _ in series])


def render_page(report: InsightsOut, *, collections: Sequence[str],
                sign_out: bool = True) -> str:
    """The whole page for one report; `sign_out` for a session of the sign-in form (a reader
    let in by the intranet's login signs out there)."""
    days = [d.day for d in report.per_day]
    questions_plot = stacked_bars(
        "q", f"Questions per day from {report.since} to {report.until}: answered and declined",
        days, [(ANSWERED, "answered", [d.answered for d in report.per_day]),
               (DECLINED, "declined", [d.declined for d in report.per_day])])
    votes_plot = stacked_bars(
        "v", "Feedback per day: helpful and not helpful", days,
        [(HELPFUL, "helpful", [d.helpful for d in report.per_day]),
         (UNHELPFUL, "not helpful", [d.not_helpful for d in report.per_day])])
    latency_plot = lines(
        "l", "Latency per day, p50 and p95, in milliseconds", days,
        [(P50, "p50", [d.p50_ms for d in report.per_day]),
         (P95, "p95", [d.p95_ms for d in report.per_day])], " ms")
    period = "".join(f'<option value="{p}"{" selected" if p == report.days else ""}>'
                     f"last {p} days</option>" for p in PERIODS)
    choices = "".join(f'<option{" selected" if c == report.collection else ""}>{_e(c)}</option>'
                      for c in collections)
    query = f"days={report.days}&amp;collection={_e(report.collection)}"
    exports = " · ".join(
        f'<a href="/admin/insights.csv?table={t}&amp;{query}" download>{label}</a>'
        for t, label in (("days", "per day"), ("unanswered", "unanswered"),
                         ("not_helpful", "not helpful"), ("documents", "documents")))
    out = [_HEAD.format(title="Insights"), "<header><h1>Insights</h1>",
           '<form method="post" action="/admin/logout"><button>Sign out</button></form>'
           if sign_out else "", "</header>",
           '<form class="period" method="get" action="/admin/insights">',
           f'<label>Period <select name="days">{period}</select></label>',
           f'<label>Collection <select name="collection">{choices}</select></label>',
           "<button>Show</button></form>",
           f"<p class=\"note\">{_e(report.since)} to {_e(report.until)} (UTC). Index "
           f"{_e(report.index_version or 'not loaded')}. CSV: {exports}. JSON: "
           f"<code>GET /api/admin/insights?{query}</code>.</p>",
           '<dl class="figures">',
           f"<div><dt>Questions</dt><dd>{report.questions}</dd></div>",
           f"<div><dt>Answered</dt><dd>{_pct(report.answered_share)}</dd></div>",
           f"<div><dt>Helpful</dt><dd>{_pct(report.helpful_share)}"
           f"<small> of {report.helpful + report.not_helpful} votes</small></dd></div>",
           f"<div><dt>Latency p50 / p95</dt><dd>{_ms(report.p50_ms)} / {_ms(report.p95_ms)}"
           "</dd></div></dl>",
           f"<h2>Questions per day</h2><figure>{questions_plot}</figure>",
           f"<h2>Feedback per day</h2><figure>{votes_plot}</figure>",
           f"<h2>Latency</h2><figure>{latency_plot}</figure>",
           "<h2>Top unanswered questions</h2>"]
    if not report.questions_stored:
        out.append(f"<p class=\"note\">{report.declined} questions were declined. Question text "
                   "is not stored (<code>QA_STORE_QUESTIONS</code> is off), so only counts are "
                   "shown.</p>")
    elif not report.unanswered:
        out.append("<p class=\"note\">No declined questions in this period.</p>")
    else:
        out.append("<table><thead><tr><th>Asked</th><th>Question (most common wording)</th>"
                   "</tr></thead><tbody>")
        out.extend(f"<tr><td>{g.count}</td><td>{_e(g.example)}"
                   + (f" <small>({g.variants} wordings)</small>" if g.variants > 1 else "")
                   + "</td></tr>" for g in report.unanswered)
        out.append("</tbody></table>")
    out.append("<h2>Answers most often marked not helpful</h2>")
    if not report.not_helpful_answers:
        out.append("<p class=\"note\">No answer was marked not helpful in this period.</p>")
    for u in report.not_helpful_answers:
        out.append(f"<section class=\"bad\"><p><b>{u.not_helpful} not helpful</b>, "
                   f"{u.helpful} helpful")
        if u.example_question:
            out.append(f" — asked as “{_e(u.example_question)}”")
        out.append("</p>")
        if not u.citations:
            out.append("<p class=\"note\">The answer quoted no passage (declined).</p>")
        for c in u.citations:
            where = " — ".join(x for x in (c.heading, c.title) if x) or c.doc_id
            out.append(f"<blockquote><cite>{_e(c.doc_id)} [{c.start}–{c.end}] {_e(where)}"
                       f"</cite>{_e(c.text or '(not in the served index any more)')}"
                       "</blockquote>")
        out.extend(f"<p class=\"comment\">“{_e(text)}”</p>" for text in u.comments)
        out.append("</section>")
    out.append("<h2>Most-cited documents</h2>")
    if report.most_cited:
        out.append("<table><thead><tr><th>Cited</th><th>Document</th></tr></thead><tbody>")
        out.extend(f"<tr><td>{c.count}</td><td>{_e(c.title or c.doc_id)}<br><small>"
                   f"{_e(c.doc_id)}</small></td></tr>" for c in report.most_cited)
        out.append("</tbody></table>")
    else:
        out.append("<p class=\"note\">No answer cited a document in this period.</p>")
    out.append(f"<h2>Documents never cited ({report.never_cited_total})</h2>")
    if report.never_cited:
        out.append("<ul class=\"docs\">" + "".join(f"<li>{_e(doc)}</li>"
                                                    for doc in report.never_cited) + "</ul>")
        if report.never_cited_total > len(report.never_cited):
            more = report.never_cited_total - len(report.never_cited)
            out.append(f"<p class=\"note\">…and {more} more (see the documents CSV).</p>")
    else:
        out.append("<p class=\"note\">Every document in the served index was cited.</p>")
    out.append("</main></body></html>")
    return "".join(out)


def render_login(message: str | None = None, *, form: bool = True) -> str:
    """The sign-in form: the admin token goes in a POST body, never in a URL. Without an admin
    token (only QA_INSIGHTS_GROUPS lets readers in) there is no form, only the reason."""
    note = f'<p class="err" role="alert">{_e(message)}</p>' if message else ""
    login = ('<form class="login" method="post" action="/admin/insights">'
             '<label for="token">Admin token</label>'
             '<input id="token" name="token" type="password" autocomplete="current-password" '
             'required maxlength="1024">'
             "<button>Sign in</button></form>") if form else ""
    return (_HEAD.format(title="Insights — sign in") + "<h1>Insights</h1>" + note + login +
            "</main></body></html>")


_HEAD = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
         '<meta name="viewport" content="width=device-width, initial-scale=1">'
         '<title>{title}</title><link rel="stylesheet" href="/admin/insights.css"></head>'
         "<body><main>")
