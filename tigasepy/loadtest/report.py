"""Presenting a run: the one-line summary, the JSON file and the PNG + HTML report.

The plots need matplotlib (``pip install tigasepy[loadtest]``); without it the HTML
page still has the tables and says how to get the plots.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


def summary_line(report: dict[str, Any]) -> str:
    """One human line with the headline figures of ``report``."""
    f = report["figures"]
    scenario = report["scenario"]
    p = report["params"]
    if scenario == "login":
        head = (f"login: {f['logins']}/{f['attempts']} ok, {f['logins_per_s']} logins/s, "
                f"latency p50 {_ms(f['login_p50_ms'])} p99 {_ms(f['login_p99_ms'])}, "
                f"concurrency {p['concurrency']}, pbkdf2 during storm {f.get('pbkdf2_during_storm')}")
    elif scenario == "idle":
        per = f.get("kib_per_connection")
        head = (f"idle: {f['connected']} sessions held ({f['still_connected']} at the end), server RSS "
                f"{_kib(f.get('rss_before_kib'))} -> {_kib(f.get('rss_after_kib'))} = "
                f"{'-' if per is None else f'{per:.1f}'} KiB/connection, "
                f"login p50 {_ms(f['login_p50_ms'])} p99 {_ms(f['login_p99_ms'])}")
    elif scenario == "chat":
        head = (f"chat: {f['pairs']} pairs x window {p['window']}: {f['msgs_per_s']} msgs/s delivered, "
                f"round trip p50 {_ms(f['p50_ms'])} p99 {_ms(f['p99_ms'])}, lost {f['lost']}, dup {f['duplicates']}")
    elif scenario == "soak":
        head = (f"soak: {f['rate']:g} msgs/s asked ({f['achieved_send_rate']} sent/s) for {p['duration_s']:g}s: "
                f"sent {f['sent']}, received {f['delivered']}, lost {f['lost']}, dup {f['duplicates']}, "
                + (f"echoed {f['echoes']} (lost {f['echoes_lost']}), round trip " if p.get("echo") else "latency ")
                + f"p50 {_ms(f['p50_ms'])} p99 {_ms(f['p99_ms'])} max {_ms(f['max_ms'])}, "
                f"RSS drift {f.get('rss_drift_pct')}%")
    elif scenario == "presence":
        head = (f"presence: {p['users']} users x {f['contacts_per_user']} contacts, {f['broadcasts']} broadcasts: "
                f"delivered {f['delivered']}/{f['expected']} (lost {f['lost']}), per contact p50 {_ms(f['p50_ms'])} "
                f"p99 {_ms(f['p99_ms'])}, whole fan-out p50 {_ms(f['fanout_p50_ms'])} p99 {_ms(f['fanout_p99_ms'])}")
    else:
        head = scenario
    tail = f" | errors {f['errors']}"
    if f.get("server_cpu_pct") is not None:
        tail += f", server cpu {f['server_cpu_pct']}%"
    if f.get("server_us_per_msg") is not None:
        tail += f" ({f['server_us_per_msg']:.0f} us/msg)"
    if f.get("server_ms_per_login") is not None:
        tail += f" ({f['server_ms_per_login']:.2f} ms/login)"
    if f.get("server_rss_max_kib"):
        tail += f", server rss max {_kib(f['server_rss_max_kib'])}"
    tail += f", client cpu {f['client_cpu_pct']}% x {p['workers']} worker(s)"
    if f.get("machine_busy"):
        tail += f" (MACHINE BUSY: load {f['loadavg']})"
    if f.get("client_bound"):
        tail += " (CLIENT-BOUND: add --workers)"
    return head + tail


def _kib(v: Any) -> str:
    return "-" if not v else f"{v / 1024:.1f} MiB"


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write ``report`` as JSON."""
    Path(path).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def write_report(report: dict[str, Any], directory: str | Path) -> list[Path]:
    """Write ``report.html`` (and ``report.png`` when matplotlib is there) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    png = out / "report.png"
    plotted = plot(report, png)
    if plotted:
        written.append(png)
    page = out / "report.html"
    page.write_text(_html(report, plotted), encoding="utf-8")
    written.append(page)
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    written.append(out / "report.json")
    return written


def plot(report: dict[str, Any], path: Path) -> bool:
    """Plot throughput, latency, server RSS and CPU over time; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    timeline = report["timeline"]
    samples = report["samples"]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    t = [row["t"] for row in timeline]
    ax = axes[0]
    for key, label in (("delivered", "delivered/s"), ("sent", "sent/s"), ("logins", "logins/s"),
                       ("broadcasts", "broadcasts/s"), ("errors", "errors/s"), ("login_errors", "login errors/s"),
                       ("disconnects", "disconnects/s")):
        ys = [row.get(key, 0) for row in timeline]
        if any(ys):
            ax.plot(t, ys, label=label)
    ax.set_ylabel("per second")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"tigasepy loadtest: {summary_line(report)[:110]}", fontsize="small")
    ax = axes[1]
    lt = [row["t"] for row in timeline if "p50_ms" in row]
    if lt:
        ax.plot(lt, [row["p50_ms"] for row in timeline if "p50_ms" in row], label="p50")
        ax.plot(lt, [row["p99_ms"] for row in timeline if "p99_ms" in row], label="p99")
        ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_ylabel("latency (ms)")
    ax = axes[2]
    rss = [(s["t"], s["rss_kib"] / 1024) for s in samples if s.get("rss_kib")]
    if rss:
        ax.plot([a for a, _ in rss], [b for _, b in rss], label="server RSS")
    conn = [(s["t"], s.get("connected", 0)) for s in samples]
    ax.set_ylabel("server RSS (MiB)")
    if conn and any(c for _, c in conn):
        ax2 = ax.twinx()
        ax2.plot([a for a, _ in conn], [b for _, b in conn], color="grey", linestyle=":", label="connections")
        ax2.set_ylabel("connections (worker 0)")
    ax = axes[3]
    cpu = [(s["t"], s["cpu_pct"]) for s in samples if s.get("cpu_pct") is not None]
    if cpu:
        ax.plot([a for a, _ in cpu], [b for _, b in cpu], label="server")
    ccpu = [(s["t"], s["client_cpu_pct"]) for s in samples if s.get("client_cpu_pct") is not None]
    if ccpu:
        ax.plot([a for a, _ in ccpu], [b for _, b in ccpu], label="client (worker 0)")
    ax.set_ylabel("CPU (% of a core)")
    ax.set_xlabel("seconds since start")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _html(report: dict[str, Any], plotted: bool) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                   for k, v in report["figures"].items())
    params = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                     for k, v in {**report["target"], **report["params"]}.items())
    lat = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in report["latency_ms"].items())
    errors = "".join(f"<li>{esc(e)}</li>" for e in report["errors"]) or "<li>none</li>"
    image = ('<img src="report.png" alt="throughput, latency, RSS and CPU over time">' if plotted else
             "<p>No plots: install matplotlib (<code>pip install matplotlib</code>) and run again.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tigasepy loadtest: {esc(report['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:1em auto}}table{{border-collapse:collapse;margin:1em 0}}
th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left}}code{{background:#eee}}</style></head>
<body><h1>tigasepy loadtest: {esc(report['scenario'])}</h1>
<p><code>{esc(summary_line(report))}</code></p>
{image}
<h2>Figures</h2><table>{rows}</table>
<h2>Latency (ms)</h2><table>{lat}</table>
<h2>Run</h2><table>{params}<tr><th>wall_s</th><td>{report['wall_s']}</td></tr>
<tr><th>measured_s</th><td>{report['measured_s']}</td></tr></table>
<h2>Error samples</h2><ul>{errors}</ul>
<p>Machine-readable: <a href="report.json">report.json</a>.</p>
</body></html>
"""
