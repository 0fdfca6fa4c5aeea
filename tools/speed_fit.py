"""Fit the planner's speed model to the published measurements, and show how well it holds.

    .venv/bin/python tools/speed_fit.py            # every row: predicted, published, ratio
    .venv/bin/python tools/speed_fit.py --write    # also store the fit in edgepack/data/
    .venv/bin/python tools/speed_fit.py --json

The database is edgepack/data/speed_measurements.json (llama-bench results with their sources).
Every usable row is predicted by a fit that did not see its device (leave one device out), and
the table prints those held-out predictions against the published figure; rows the fit cannot
use are listed with the reason. --write stores the fit of all usable rows, with the spread of the
held-out ratios (the planner's interval), in edgepack/data/speed_fit.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib import resources

from edgepack.plan import speed_fit as sf
from edgepack.plan.speed_model import FEATURES


def run() -> dict:
    data = sf.rows()
    held = sf.leave_one_device_out(data)
    coefficients = sf.fit_all(data)
    spread = {
        f"{kind}/{phase}": sf.spread(held, kind, phase) for kind, phase in FEATURES
    }
    carried = {
        f"{kind}/{phase}": sf.transfer(data, held, kind, phase) for kind, phase in FEATURES
    }
    db = resources.files("edgepack").joinpath(sf.DB).read_bytes()
    skipped = [
        {"id": r["id"], "phase": phase, "why": why}
        for phase in ("decode", "prefill")
        for r in data
        if (why := sf.usable(r, phase))
    ]
    return {
        "database_sha256": hashlib.sha256(db).hexdigest(),
        "rows": len(data),
        "coefficients": coefficients,
        "features": {f"{k}/{p}": list(names) for (k, p), names in FEATURES.items()},
        "spread": spread,
        "transfer": carried,
        "held_out": held,
        "skipped": skipped,
    }


def text(result: dict) -> str:
    lines = [f"{result['rows']} published rows; held-out predictions (leave one device out):", ""]
    head = ("phase", "kind", "row", "predicted", "published", "ratio")
    lines.append("{:8} {:4} {:44} {:>10} {:>10} {:>6}".format(*head))
    for h in sorted(result["held_out"], key=lambda h: (h["phase"], h["kind"], h["device"])):
        lines.append(
            f"{h['phase']:8} {h['kind']:4} {h['id'][:44]:44} {h['predicted']:10.1f} "
            f"{h['published']:10.1f} {h['ratio']:6.2f}"
        )
    lines += ["", "summary (max(ratio, 1/ratio) over held-out rows):"]
    for key, s in result["spread"].items():
        if not s.get("rows"):
            lines.append(f"  {key:12} no usable rows")
            continue
        lines.append(
            f"  {key:12} {s['rows']:3} rows, {s['devices']:2} devices: "
            f"median {s['median_x']:.2f}x, worst {s['worst_x']:.2f}x; "
            f"ratio 10-90 %: {s['ratio_q10']:.2f}-{s['ratio_q90']:.2f}"
        )
    lines += ["", "a held-out error that recurs on another device, same model and quant:"]
    for key, t in result["transfer"].items():
        lines.append(f"  {key:12} weight {t['weight']:.3f} over {t['pairs']} pairs of rows")
    lines += ["", "coefficients (all rows):"]
    for key, coef in result["coefficients"].items():
        names = result["features"][key]
        terms = ", ".join(f"{n} {c:.4g}" for n, c in zip(names, coef, strict=True))
        lines.append(f"  {key:12} {terms}")
    reasons: dict[str, int] = {}
    for s in result["skipped"]:
        reason = s["why"].split(":")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
    lines += ["", "rows the fit cannot use (per phase):"]
    lines += [f"  {n:3}  {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the fit in edgepack/data/")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    result = run()
    if args.write:
        stored = {k: result[k] for k in ("database_sha256", "rows", "coefficients", "features")}
        stored["spread"] = result["spread"]
        stored["transfer"] = result["transfer"]
        path = resources.files("edgepack").joinpath(sf.FIT)
        with open(str(path), "w", encoding="utf-8") as fh:
            fh.write(json.dumps(stored, indent=1) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(result, indent=1) if args.json else text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
