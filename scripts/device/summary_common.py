"""What the device checks' summaries share: reading a step's JSON report, telling an NVML-measured
window, and the verdict (every boolean check true, no failed step) printed as JSON."""

import json
import sys
from pathlib import Path


def load(d: Path, name: str):
    """The step's report `d/NAME.json`, or `{"error": ...}` when it is missing or not JSON."""
    p = d / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        return {"error": f"{p.name}: {e}"}


def failed_steps(d: Path):
    """The steps the shell script recorded as failed (`failed.txt`)."""
    f = d / "failed.txt"
    return [l for l in f.read_text().split() if l] if f.exists() else []


def gpu_measured(e) -> bool:
    """Whether some domain of a Measurement was read from NVML as measured energy."""
    return isinstance(e, dict) and any(
        str(d.get("source", "")).startswith("nvml") and d.get("provenance") == "measured"
        for d in e.get("domains", [])
    )


def finish(out) -> int:
    """Sets `out["pass"]`, prints `out` as JSON; 0 when it passes, 1 otherwise."""
    c = out["checks"]
    ok = all(v for v in c.values() if isinstance(v, bool)) and not out["failed_steps"]
    out["pass"] = ok
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0 if ok else 1
