"""The report's figures, drawn with matplotlib as inline SVG (text kept as text, ids made unique per
figure, a title and a description for screen readers): an experiment's measured points beside the
paper's values (`plot_svg`), and the forest plot of every numeric claim in tolerance units
(`forest_svg`).
"""
from __future__ import annotations

import io
import math
import re
from collections import defaultdict

from .fmt import AXES, metric_label


# verdict colours, each >= 4.5:1 against white (WCAG AA), shared by the HTML and the figures
COLOURS = {"pass": "#1b6e20", "fail": "#b71c1c", "inconclusive": "#5e35b1", "diverged": "#8a4b00",
           "error": "#8a4b00", "not run": "#595959"}
# ... and a marker shape each, so that a verdict does not rest on colour alone (matplotlib, and in words)
MARKERS = {"pass": "o", "fail": "X", "inconclusive": "D", "diverged": "^", "error": "s", "not run": "."}
MARKER_WORDS = {"pass": "● disc", "fail": "✖ cross", "inconclusive": "◆ diamond", "diverged": "▲ triangle",
                "error": "■ square"}


# per plotted metric (in plot.y order), its marker and line style, so that train and test do not
# rest on colour alone
METRIC_STYLES = (("o", "-"), ("s", "--"), ("^", ":"), ("v", "-."))
LINE_WORDS = ("circles, solid", "squares, dashed", "triangles, dotted", "down-triangles, dash-dot")


def axis_label(metrics: list) -> str:
    labels = [metric_label(m) for m in metrics]
    units = {u for _, u in labels}
    if len(units) == 1 and units != {""}:
        unit = units.pop()
        names = [n for n, _ in labels]
        if len(names) > 1 and all(n.endswith("accuracy") for n in names):
            return f"accuracy ({unit})"
        return f"{' / '.join(names)} ({unit})"
    return " / ".join(n + (f" ({u})" if u else "") for n, u in labels)


def _log_ticks(lo: float, hi: float) -> list:
    """1-2-5 ticks from the one at or below `lo` to the one at or above `hi`, so both data ends
    are labelled."""
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2)
             for m in (1, 2, 5)]
    first = max(t for t in ticks if t <= lo * (1 + 1e-9))
    last = min(t for t in ticks if t >= hi * (1 - 1e-9))
    return [t for t in ticks if first <= t <= last]


def _svg(fig, uid: str, title: str, desc: str) -> str:
    """The figure as inline SVG: text as text, ids prefixed by `uid` (unique in the page), a
    <title> and <desc> for screen readers."""
    import matplotlib
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": uid, "svg.id": uid}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    # matplotlib's own ids (clip paths, markers, axes groups) become uid-prefixed
    ids = set(re.findall(r'\bid="([^"]+)"', svg)) - {uid}
    if ids:  # one pass over the text (a pass per id took a second per report)
        names = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
        svg = re.sub(rf'(\bid="|url\(#|xlink:href="#|href="#)({names})(?=["\)])', rf"\g<1>{uid}-\g<2>", svg)
    head_end = svg.index(">") + 1
    svg = (svg[:head_end - 1] + f' role="img" aria-labelledby="{uid}-title {uid}-desc">'
           + f'<title id="{uid}-title">{_esc(title)}</title><desc id="{uid}-desc">{_esc(desc)}</desc>'
           + svg[head_end:])
    return svg


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _log_y(ax, ys: list) -> None:
    """A log y axis with 1-2-5 ticks that label both ends of the data."""
    import matplotlib.ticker as mticker

    ys = [y for y in ys if math.isfinite(y)]
    if not ys or min(ys) <= 0:
        return
    ax.set_yscale("log")
    ticks = _log_ticks(min(ys), max(ys))
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.set_ylim(ticks[0] / 1.15, ticks[-1] * 1.15)


def plot_svg(plot: dict, uid: str, narrow: bool = False) -> str:
    """One experiment's figure: per series, means with 95% CI bars along plot.x (log axes as the
    plot asks); the configurations drawn apart (Adam, GD) in a panel of their own on the right,
    with its own y axis so that they do not squash the sweep's; the paper's values as open
    diamonds. `narrow`: drawn for a phone (about 390 px: 4.2 inches wide, larger type, the legend
    below the axes), where the wide figure's text would shrink to about 6 px."""
    import matplotlib
    matplotlib.use("Agg")

    with matplotlib.rc_context({"font.size": 11 if narrow else 10}):
        return _plot_svg(plot, uid, narrow)


def _plot_svg(plot: dict, uid: str, narrow: bool) -> str:
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mticker

    wide = 4.2 if narrow else 6.6
    apart_labels = list(dict.fromkeys(a["label"] for a in plot["apart"]))
    twin_units = len(plot["y"]) > 1 and len({metric_label(m)[1] for m in plot["y"]}) > 1
    if apart_labels:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(wide, 4.2 if narrow else 3.6),
                                      gridspec_kw={"width_ratios": [5, 0.9 + 0.6 * len(apart_labels)]})
    else:
        fig, ax = plt.subplots(figsize=(wide, (4.6 if twin_units else 4.2) if narrow else (4.4 if twin_units else 3.6)))
        ax2 = None
    # a metric of another unit than the first (test accuracy beside movement) on a right-hand axis
    first_unit = metric_label(plot["y"][0])[1]
    right = [m for m in plot["y"][1:] if metric_label(m)[1] != first_unit]
    axr = ax.twinx() if right else None

    def on(metric):
        return axr if metric in right else ax
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {s["name"]: cycle[i % len(cycle)] for i, s in enumerate(plot["series"])}
    metric_colour = {}
    for s in plot["series"]:
        metric_colour.setdefault(s["metric"], colour[s["name"]])
    for i, m in enumerate(plot["y"]):
        metric_colour.setdefault(m, cycle[(len(plot["series"]) + i) % len(cycle)])
    # series of one metric that share an x (a ticket and its controls at 10%) are dodged apart
    sharing = defaultdict(list)
    for s in plot["series"]:
        for p in s["points"]:
            sharing[(s["metric"], p["x"])].append(s["name"])
    xs = [x for _, x in sharing] or [0]
    step = 0.04 if plot["logx"] else 0.015 * ((max(xs) - min(xs)) or 1)  # 4% apart on a log axis

    def xpos(name, metric, x):
        names = sharing[(metric, x)]
        shift = step * (names.index(name) - (len(names) - 1) / 2) if name in names else 0.0
        return x * math.exp(shift) if plot["logx"] else x + shift

    def offset(metric):  # metrics side by side at one apart configuration
        return 0.12 * (plot["y"].index(metric) - (len(plot["y"]) - 1) / 2)

    ys, ys2 = [], []
    for s in plot["series"]:
        pts = s["points"]
        err = [[p["mean"] - p["lo"] for p in pts], [p["hi"] - p["mean"] for p in pts]]
        mk, ls = METRIC_STYLES[plot["y"].index(s["metric"]) % len(METRIC_STYLES)]
        on(s["metric"]).errorbar([xpos(s["name"], s["metric"], p["x"]) for p in pts], [p["mean"] for p in pts],
                                 yerr=err, marker=mk, ms=4, capsize=3, color=colour[s["name"]],
                                 label=s["name"] + (" (right axis)" if s["metric"] in right else ""), linestyle=ls)
        if s["metric"] not in right:
            ys += [p["lo"] for p in pts] + [p["hi"] for p in pts]
        for p in pts:  # each seed, small and faint, spread beside its mean (clear of the error bar)
            vals = p.get("values") or []
            at = xpos(s["name"], s["metric"], p["x"])
            offs = [step * (0.45 + 0.5 * i / max(len(vals) - 1, 1)) for i in range(len(vals))]
            on(s["metric"]).plot([at * math.exp(o) if plot["logx"] else at + o for o in offs], vals,
                                 linestyle="none", marker=".", ms=3, alpha=0.55, color=colour[s["name"]])
    for a in plot["apart"]:
        ax2.errorbar([apart_labels.index(a["label"]) + offset(a["metric"])], [a["mean"]],
                     yerr=[[a["mean"] - a["lo"]], [a["hi"] - a["mean"]]], marker="s", ms=5, capsize=3,
                     color=metric_colour[a["metric"]], linestyle="none")
        ys2 += [a["lo"], a["hi"]]
    paper_metrics = []
    for pp in plot.get("paper", []):
        c = colour.get(pp["series"]) or metric_colour[pp["metric"]]
        if pp["apart"]:
            target, at = ax2, apart_labels.index(pp["apart"]) + offset(pp["metric"])
            ys2.append(pp["value"])
        else:
            target, at = on(pp["metric"]), xpos(pp["series"], pp["metric"], pp["x"])
            if pp["metric"] not in right:
                ys.append(pp["value"])
        if pp.get("band"):  # the claim's tolerance band behind the paper's value
            target.plot([at, at], pp["band"], color=c, lw=7, alpha=0.18, solid_capstyle="butt")
        target.plot([at], [pp["value"]], linestyle="none", marker="D", ms=7, mfc="none", mec=c, mew=1.5,
                    label=None if pp["metric"] in paper_metrics else f"paper: {metric_label(pp['metric'])[0]}")
        paper_metrics.append(pp["metric"])
    for b in plot.get("bounds", []):  # a claim's bound over several configurations: a dotted line
        c = metric_colour[b["metric"]]
        on(b["metric"]).plot(b["x"], [b["value"]] * 2, linestyle=(0, (1, 1.5)), lw=2, color=c,
                             label=f"{b['claim']}: {b['side']} {b['value']:g}")
        if b["metric"] not in right:
            ys.append(b["value"])
    if plot["logx"]:
        ax.set_xscale("log")
        xs = sorted({p["x"] for s in plot["series"] for p in s["points"]})
        ax.set_xticks(xs, [f"{x:g}" for x in xs], rotation=45 if narrow and len(xs) > 6 else 0)
        ax.xaxis.set_minor_locator(mticker.NullLocator())
    width = {"mlp": " (hidden units)", "cnn": " (channels c)"}.get(plot["model"], "") if plot["x"] == "width" else ""
    ax.set_xlabel(AXES.get(plot["x"], plot["x"]) + width)
    ax.set_ylabel(axis_label([m for m in plot["y"] if m not in right]))
    if axr is not None:
        axr.set_ylabel(axis_label(right) + " (" + LINE_WORDS[plot["y"].index(right[0]) % len(LINE_WORDS)].split(", ")[1] + ")")
    ax.grid(alpha=0.3)
    if plot["logy"]:
        _log_y(ax, ys)
    if ax2 is not None:
        small = 9 if narrow else 8
        ax2.set_xticks(range(len(apart_labels)), apart_labels, rotation=25, ha="right", fontsize=small)
        ax2.set_xlim(-0.6, len(apart_labels) - 0.4)
        ax2.grid(alpha=0.3)
        ax2.set_title("apart (own y axis)", fontsize=small)
        if plot["logy"]:
            _log_y(ax2, ys2)
    handles, labels = ax.get_legend_handles_labels()
    if axr is not None:
        h2, l2 = axr.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if narrow:  # below the axes, one entry a line: on a phone-sized figure it would cover the points
        below = 0.25 * len(labels) + 0.1  # inches
        fig.set_figheight(fig.get_figheight() + below)
        fig.legend(handles, labels, fontsize=10, loc="lower left", ncol=1, frameon=False)
        fig.tight_layout(rect=(0, below / fig.get_figheight(), 1, 1))
        return _svg(fig, uid, plot["caption"], plot["desc"])
    if axr is not None:  # "best" cannot see the right axis's points: the legend goes below the axes
        ax.legend(handles, labels, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)
    else:
        ax.legend(handles, labels, fontsize=9, loc="best")
    fig.tight_layout()
    return _svg(fig, uid, plot["caption"], plot["desc"])


def forest_svg(rows: list, uid: str, title: str, narrow: bool = False) -> str:
    """Every numeric claim in tolerance units, one row per claim labelled by its id (the id the
    table and the cards show), the verdict as marker shape and colour. `narrow`: drawn for a phone
    (about 390 px), larger type in a narrower figure. Values beyond ±5 are drawn at the edge with
    their value in tolerance units, on a white ground so that no bar hides a sign."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clip = 5.0
    fs = 9.5 if narrow else 8
    sections = list(dict.fromkeys(r["section"] for r in rows))
    ypos, labels, y = [], [], 0
    for sec in sections:
        labels.append((y, sec, True))
        y += 1
        for r in (r for r in rows if r["section"] == sec):
            ypos.append(y)
            labels.append((y, r["label"], False))
            y += 1
    fig, ax = plt.subplots(figsize=(3.9 if narrow else 7.2, 0.9 + (0.26 if narrow else 0.21) * y))
    ax.axvline(0, color="#555", lw=0.8, zorder=1)
    for r, yy in zip(rows, ypos):
        lo_b, hi_b = (side * (clip + 1) if b is None else max(-clip - 1, min(clip + 1, b))
                      for side, b in zip((-1, 1), r["band"]))
        ax.fill_between([lo_b, hi_b], yy - 0.45, yy + 0.45, color="#dcebdc", lw=0, zorder=0,
                        label="expected band" if r is rows[0] else None)
        c = COLOURS.get(r["verdict"], "#333")
        z, lo, hi = (max(-clip, min(clip, v)) for v in (r["z"], r["lo"], r["hi"]))
        ax.plot([lo, hi], [yy, yy], color=c, lw=1.5, zorder=2)
        off = abs(r["z"]) > clip
        if off:
            ax.plot([z], [yy], marker=">" if r["z"] > 0 else "<", color=c, ms=6, zorder=3)
            ax.annotate(f"{r['z']:+.1f}".replace("-", "−"), (z, yy), xytext=(-8 if z > 0 else 8, 0),
                        textcoords="offset points", ha="right" if z > 0 else "left", va="center",
                        fontsize=fs - 0.5, color=c, zorder=4,
                        bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"})
        else:
            ax.plot([z], [yy], marker=MARKERS.get(r["verdict"], "o"), color=c, ms=6 if narrow else 5.5,
                    mec="white", mew=0.4, zorder=3, linestyle="none")
    ax.set_yticks([p for p, _, _ in labels], [t for _, t, _ in labels], fontsize=fs)
    for tick, (_, _, head) in zip(ax.get_yticklabels(), labels):
        if head:
            tick.set_fontweight("bold")
    ax.set_ylim(y - 0.5, -0.7)
    ax.set_xlim(-clip - 0.6, clip + 0.6)
    ax.set_xticks(range(-4, 5, 2 if not narrow else 4))
    ax.tick_params(axis="x", labelsize=fs)
    ax.set_xlabel("(measured − expected) / tol" if narrow else
                  "(measured − expected) / tolerance; marker: estimate, bar: 95% CI",
                  fontsize=fs)
    ax.grid(axis="x", alpha=0.3)
    for v, colour in COLOURS.items():
        if v in {r["verdict"] for r in rows}:
            ax.plot([], [], marker=MARKERS[v], color=colour, linestyle="none", label=v)
    # at phone width the legend is anchored at the axes' right edge (centred, it ran past the figure's)
    ax.legend(fontsize=fs - 1 if narrow else fs, loc="lower right" if narrow else "lower center",
              bbox_to_anchor=(1.0, 1.0) if narrow else (0.5, 1.0),
              ncol=2 if narrow else 4, frameon=False, handletextpad=0.3, columnspacing=0.6 if narrow else 1.0)
    fig.tight_layout()
    desc = "; ".join(f"{r['label']}: {r['z']:+.2f} tol ({r['verdict']})" for r in rows)
    return _svg(fig, uid, title, desc)
