#!/usr/bin/env python3
"""Picks the committed corpus of a target: at most MAX inputs, chosen greedily
for the coverage edges they add (the input adding the most edges first, the
smaller one on a tie), from the per-input coverage that libFuzzer's `-merge=1`
records in its control file (`-merge_control_file`).

libFuzzer's own merge keeps every input that adds any feature (edge hit counts
and comparison operands included), thousands for a parser; this keeps the few
that cover most of the code, so the corpus stays small enough to commit and
to replay in CI. The campaign regrows the rest from it in minutes.

Usage: minimize.py CONTROL_FILE OUT_DIR MAX
"""

import hashlib
import shutil
import sys
from pathlib import Path


def read_control(path):
    """(files, {index: set of edges}) from a merge control file."""
    lines = Path(path).read_text(errors="replace").splitlines()
    n = int(lines[0])
    files = lines[2:2 + n]
    cov = {}
    for line in lines[2 + n:]:
        kind, _, rest = line.partition(" ")
        if kind == "COV":
            index, _, edges = rest.partition(" ")
            cov[int(index)] = set(edges.split())
    return files, cov


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    control, out, limit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    files, cov = read_control(control)
    total = set().union(*cov.values()) if cov else set()
    sizes = {i: Path(files[i]).stat().st_size for i in cov}
    covered, picked = set(), []
    while len(picked) < limit:
        best = max(cov, key=lambda i: (len(cov[i] - covered), -sizes[i]), default=None)
        if best is None or not cov[best] - covered:
            break
        covered |= cov.pop(best)
        picked.append(files[best])
    out.mkdir(parents=True, exist_ok=True)
    for f in picked:
        data = Path(f).read_bytes()
        shutil.copyfile(f, out / hashlib.sha1(data).hexdigest())
    share = 100 * len(covered) / len(total) if total else 100
    print(f"kept {len(picked)} inputs covering {len(covered)} of {len(total)} edges ({share:.1f} %)")


if __name__ == "__main__":
    main()
