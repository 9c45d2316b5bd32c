"""What a run prints and writes for people: each scenario's table, the targets of issue 8, and
bench/out/results.md (the README's tables come from it)."""

from __future__ import annotations

from bench.harness.units import human


def print_table(title: str, summary: dict, base: str | None, size: int | None = None) -> None:
    print(f"\n{title}")
    head = f"  {'contender':44s} {'median':>8s} {'MB/s':>7s} {'CPU s':>6s} {'RSS MiB':>8s}"
    print(head + (f" {'vs ' + base:>18s}" if base else ""))
    for name, s in summary.items():
        rate = f"{size / s['wall'] / 1e6:7.0f}" if size else f"{'':>7s}"
        ratio = f" {s['ratio']:17.2f}x" if base and s.get("ratio") is not None else ""
        print(f"  {name:44s} {s['wall']:7.2f}s {rate} {s['cpu']:6.2f} {s['rss_mib']:8.0f}{ratio}")


def print_checks(checks: dict) -> None:
    """``  ours CHECK: VALUE`` under a scenario's table."""
    for k, v in checks.items():
        print(f"  ours {k}: {v:.2f}")


def print_targets(data: dict) -> None:
    """Every scenario's checks, at the end of a run."""
    print("\n== targets ==")
    for key, sc in data["scenarios"].items():
        for name, value in sc.get("targets", {}).items():
            print(f"  {key}: {name}: {value:.2f}" if isinstance(value, float) else f"  {key}: {name}: {value}")


TARGETS = {  # scenario -> (how ours is compared, target) as in issue 8
    "1": "≤ 1.0× curl -o; ≤ 0.45× curl -o && sha256sum; default (auto) ≤ 1.0× one connection; peak RSS ≤ 100 MiB",
    "2": "≥ 0.95× aria2c -x8 -s8 throughput, with no flags and with --connections 8",
    "3": "≤ 1 MiB re-transferred per interruption",
    "4": "≤ 1.0× aria2c -i -j8 (issue 13; issue 8 asked ≤ 2×)",
    "5": "0 bytes; 2 GiB re-run ≤ 1.2× small; ≤ one-task flow + 2 s",
    "6": "≤ 1.0× snapshot_download; resumes after a kill",
    "7": "≤ 1.3× tar -xf",
    "8": "≤ 0.5 s",
    "9": "≤ 1.0× curl -o && sync over TLS; CPU ≤ 1.1× curl + openssl dgst; --connections 4 ≤ 1.0× aria2c -x4; "
         "default (auto) ≤ 1.0× one connection (issue 13)",
}


def markdown(data: dict) -> str:
    """The results as Markdown tables (bench/out/results.md; the README's table comes from it)."""
    m = data["machine"]
    lines = [f"Measured {data['date']} on {m['cpus']} cores ({m['cpu']}), {m['memory']} RAM, Python {m['python']}, "
             f"Linux {m['kernel']}; big file {human(data.get('size', 0))}; load average at start "
             f"{m.get('loadavg_at_start')}, at end {data.get('loadavg_at_end')}.", ""]
    lines += ["| scenario | check | ours | target | measured |", "|---|---|---|---|---|"]
    for key, sc in data["scenarios"].items():
        for name, value in sc.get("targets", {}).items():
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            when = sc.get("date", data["date"]) + (f", load {sc['loadavg'][0]}" if sc.get("loadavg") else "")
            lines.append(f"| {key} | {name} | {shown} | {TARGETS.get(key, '')} | {when} |")
    for key, sc in data["scenarios"].items():
        rows = sc.get("contenders", {})
        if rows:
            lines += ["", f"Scenario {key}:", ""] + contenders_table(rows)
    return "\n".join(lines) + "\n"


def contenders_table(rows: dict) -> list[str]:
    """One scenario's contenders: the timing columns when measured by ``measure``, else its own fields."""
    first = next(iter(rows.values()))
    if isinstance(first, dict) and "walls" in first:
        lines = ["| contender | median wall | runs | CPU s | peak RSS MiB | ratio |", "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            ratio = f"{r['ratio']:.2f}×" if r.get("ratio") is not None else ""
            lines.append(f"| {name} | {r['wall']:.2f} s | {', '.join(f'{w:.2f}' for w in r['walls'])} | "
                         f"{r['cpu']:.2f} | {r['rss_mib']:.0f} | {ratio} |")
        return lines
    lines = ["| contender | " + " | ".join(k for k in first if k != "rounds") + " |",
             "|---|" + "---|" * len([k for k in first if k != "rounds"])]
    for name, r in rows.items():
        vals = [f"{v:.2f}" if isinstance(v, float) else str(v) for k, v in r.items() if k != "rounds"]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return lines
