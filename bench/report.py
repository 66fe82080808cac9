"""The one table `make bench` prints (Markdown, so the same text is the committed results file)."""

from __future__ import annotations

import datetime
import os
import platform


def _number(value):
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 100:
        return "%.0f" % value
    return "%.3g" % value


def _range(values):
    if not values:
        return "—"
    if len(values) == 1:
        return _number(values[0])
    return "%s–%s" % (_number(min(values)), _number(max(values)))


def _runs(spread):
    """``spread`` is (Nixie's runs, the reference's), either possibly empty; "" when the row has none."""
    return " / ".join(_range(values) for values in spread) if spread else ""


def render(rows, smoke, parts, seconds):
    lines = [
        "# Nixie benchmarks%s" % (" (smoke)" if smoke else ""),
        "",
        "%s, %d cores (%s), %s; parts %s; %.0f s; load average at the end %.2f %.2f %.2f. Ratio = Nixie / reference"
        " (dnsmasq proxy-DHCP + TFTP, nginx), of medians; runs = the range of the runs behind each median, Nixie / reference."
        % ((datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), os.cpu_count(), platform.processor() or platform.machine(),
            platform.platform(terse=True), ",".join(parts), seconds) + os.getloadavg()),
        "",
        "| part | figure | Nixie | reference | unit | ratio | better | target | met | runs |",
        "|---|---|---:|---:|---|---:|---|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row.part, row.figure, _number(row.nixie), _number(row.reference), row.unit,
            "%.2f" % row.ratio if row.ratio is not None else "—", row.better, row.target, met, _runs(row.spread)))
    return "\n".join(lines) + "\n"
