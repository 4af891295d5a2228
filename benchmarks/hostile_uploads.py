"""Hostile NPZ uploads against a real API process, with the API's memory measured from
/proc/<pid>/status: its peak RSS (VmHWM, reset before each upload) above its RSS before.

Cases: a valid upload, a 1 GiB zip bomb (~5 MB deflated zeros), a member whose headers claim
1 GiB over a few bytes, a member whose deflate stream runs 256 MiB past its declared size (read
only as far as its sizes say: 201), and an archive of 400,000 members. Each must get its status
and none may make the API's peak RSS grow past --bound-mib.

    .venv/bin/python benchmarks/hostile_uploads.py [--database-url URL] [--bound-mib 200]

Prints a table and ends with one line:
uploads=<n> refused=<n> server_errors=<n> api_rss_mib=<n> api_peak_growth_mib=<max>
(the exit code is 1 when a status is wrong, a 5xx is seen or the growth passes the bound).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import faults, hostile  # noqa: E402
from tests.hostile import GiB, MiB  # noqa: E402


@dataclass
class Row:
    """One upload: what the API answered, and what it cost the API."""

    case: str
    size: int
    status: int
    expected: int
    seconds: float
    growth: int
    message: str

    @property
    def ok(self) -> bool:
        return self.status == self.expected


def cases(folder: Path) -> list[tuple[str, Path, int]]:
    """(name, file, expected status) for each hostile upload, written streaming to `folder`."""
    arrays = hostile.small_arrays()
    rest = [(f"{k}.npy", [hostile.npy_bytes(a)], None) for k, a in arrays.items() if k != "x_train"]
    real = hostile.npy_bytes(arrays["x_train"])
    claim = hostile.npy_header((GiB // 4, 1))
    files: dict[str, list[hostile.Member]] = {
        "valid (40+10 rows)": [("x_train.npy", [real], None), *rest],
        "headers claim 1 GiB, stream 64 B": [
            ("x_train.npy", [claim, bytes(64)], len(claim) + GiB),
            *rest,
        ],
        "stream 256 MiB past its sizes": [
            ("x_train.npy", [real, *hostile.zeros(256 * MiB)], len(real)),
            *rest,
        ],
        "400,000 members": [("y_val.npy", [b"x"], None)] * 400_000,
    }
    out = [("1 GiB zip bomb", hostile.zip_bomb(folder / "bomb.npz", GiB), 422)]
    for i, (name, members) in enumerate(files.items()):
        path = folder / f"case{i}.npz"
        hostile.write_zip(path, members)
        out.append((name, path, 201 if name.startswith(("valid", "stream")) else 422))
    return out


def measure(url: str, pid: int, name: str, path: Path, expected: int) -> Row:
    """Upload one file; the API's peak RSS growth over the request, from its /proc status."""
    data = path.read_bytes()
    if not hostile.reset_peak(pid):
        raise RuntimeError(f"cannot reset VmHWM of the API (pid {pid})")
    before = hostile.rss_bytes(pid)
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/datasets", files={"file": ("d.npz", data)}, timeout=300)
    seconds = time.perf_counter() - started
    growth = hostile.rss_bytes(pid, "VmHWM") - before
    errors = response.json().get("errors") if response.status_code >= 400 else None
    message = f"{errors[0]['field']}: {errors[0]['message']}" if errors else ""
    return Row(name, len(data), response.status_code, expected, seconds, growth, message)


def table(rows: list[Row]) -> str:
    head = f"{'upload':<36} {'file MB':>8} {'status':>6} {'secs':>6} {'API peak +MiB':>13}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.case:<36} {r.size / 1e6:>8.1f} {r.status:>6} {r.seconds:>6.2f} "
            f"{r.growth / MiB:>13.1f}  {'ok' if r.ok else f'FAILED (want {r.expected})'}"
        )
        if r.message:
            lines.append(f"    {r.message[:150]}")
    return "\n".join(lines)


def run(url: str, pid: int, folder: Path) -> list[Row]:
    return [measure(url, pid, name, path, want) for name, path, want in cases(folder)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary folder")
    parser.add_argument("--bound-mib", type=float, default=200.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lrsearch-hostile-") as tmp:
        root = Path(tmp)
        url = args.database_url or f"sqlite:///{root / 'lrsearch.db'}"
        with faults.stage_on(url, root) as stage:
            process, _ = stage.api()
            assert process.proc is not None
            pid = process.proc.pid
            rss = hostile.rss_bytes(pid)
            rows = run(process.url, pid, root)
    print(table(rows))
    peak = max(r.growth for r in rows)
    errors = sum(r.status >= 500 for r in rows)
    refused = sum(400 <= r.status < 500 for r in rows)
    print(
        f"uploads={len(rows)} refused={refused} server_errors={errors} "
        f"api_rss_mib={rss / MiB:.0f} api_peak_growth_mib={peak / MiB:.1f}"
    )
    failed = errors or not all(r.ok for r in rows) or peak > args.bound_mib * MiB
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
