"""The digits demo with each comparison protocol, one run after the other, ratios from one run.

`smpc launch` of configs/local-2pc-fss.yaml (fss: the calibrated program, narrow keys,
every batch's keys made before the online phase), configs/local-2pc.yaml (circuits with
the dealer's truncation, the default) and the same with `truncation: local` (as
upstream CrypTen runs it), each with `--report`: accuracy, agreement, alice's online time,
bytes, rounds and keys, the dealer's generation time, the parties' peak memory.

    python benchmarks/fss_demo.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from results_page import results_page

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def launch(config: Path, report: Path) -> dict:
    done = subprocess.run(
        [str(BIN / "smpc"), "launch", str(config), "--report", str(report), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(f"{config} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(report.read_text())


def upstream_config(work: Path) -> Path:
    # the demo's config with CrypTen's own two-party truncation, run in a folder of its own
    doc = yaml.safe_load((ROOT / "configs" / "local-2pc.yaml").read_text())
    for party in doc["parties"]:
        for key in ("data", "weights"):
            if key in party:
                party[key] = str((ROOT / "configs" / party[key]).resolve())
    doc["protocol"]["truncation"] = "local"
    doc["run_dir"] = str(work / "upstream")
    path = work / "upstream.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reports = {
            "fss": launch(ROOT / "configs" / "local-2pc-fss.yaml", work / "fss.json"),
            "circuits": launch(ROOT / "configs" / "local-2pc.yaml", work / "circuits.json"),
            "upstream": launch(upstream_config(work), work / "upstream.json"),
        }
    print("the digits demo: 360 rows, batch 60, alice and bob, the dealer; alice's figures")
    print(
        f"{'setting':>28} {'accuracy':>8} {'agree':>6} {'online s':>8} {'MiB sent':>9} {'rounds':>6} "
        f"{'key MiB':>8} {'B/cmp':>6} {'gen s/batch':>11} {'peak MiB':>8}"
    )
    names = {
        "fss": "fss (local-2pc-fss.yaml)",
        "circuits": "circuits (local-2pc.yaml)",
        "upstream": "circuits, local truncation",
    }
    for mode, r in reports.items():
        a = r["parties"]["alice"]
        per = a.get("key_bytes_per_comparison")
        peak = max(p["peak_rss_mib"] for p in r["parties"].values())
        print(
            f"{names[mode]:>28} {r['accuracy_mpc']:>8.4f} {r['agreement']:>6.3f} {r['online_s']:>8.2f} "
            f"{a['bytes_sent'] / 2**20:>9.2f} {a['rounds']:>6} {a.get('key_bytes', 0) / 2**20:>8.1f} "
            f"{'-' if per is None else f'{per:.0f}':>6} {r['dealer']['generation_s_per_batch']:>11.2f} {peak:>8.0f}"
        )
    fss, circuits = (reports[m]["parties"]["alice"] for m in ("fss", "circuits"))
    widths = ", ".join(
        f"{bits} bits x {w['comparisons']:,} ({w['key_bytes_per_comparison']:.0f} B)"
        for bits, w in sorted(fss["comparison_widths"].items(), key=lambda kv: int(kv[0]))
    )
    print(f"fss comparisons by width (alice): {widths}")
    print(
        f"fss / circuits: online {reports['fss']['online_s'] / reports['circuits']['online_s']:.2f}x, "
        f"bytes {fss['bytes_sent'] / circuits['bytes_sent']:.3f}x, rounds {fss['rounds'] / circuits['rounds']:.2f}x"
    )


if __name__ == "__main__":
    with results_page("fss-demo"):
        main()
