#!/usr/bin/env python3
"""Trim a fuzz corpus to at most MAX files by greedy set cover, keeping every hand-made `seed-*` file.

libFuzzer's own `-merge`/`cmin` keeps one input per feature (edge *and* hit-count bucket), which leaves
thousands of files for a postcard decoder; a committed corpus should stay small (~200 files). This asks the
built fuzz target for each input's coverage (a `-merge` control file), then keeps the seeds and, greedily,
the inputs that add the most edges not yet covered, then the most features, until MAX or nothing is left
to gain. It uses the newer of the two builds below. Usage (from fuzz/):

    python3 trim-corpus.py <target> [MAX=190]
"""
import os
import subprocess
import sys
import tempfile

target = sys.argv[1]
cap = int(sys.argv[2]) if len(sys.argv) > 2 else 190
# The newest build of the target: the ASan one (`cargo fuzz build`) or `-s none --target-dir target/none`.
builds = [f"{d}/x86_64-unknown-linux-gnu/release/{target}" for d in ("target", "target/none")]
binary = max((b for b in builds if os.path.exists(b)), key=os.path.getmtime)
corpus = f"corpus/{target}"

with tempfile.TemporaryDirectory() as tmp:
    control = os.path.join(tmp, "control")
    out = os.path.join(tmp, "out")
    os.mkdir(out)
    subprocess.run(
        [binary, "-merge=1", f"-merge_control_file={control}", out, corpus],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lines = open(control).read().splitlines()

n = int(lines[0])
paths = lines[2 : 2 + n]
size, edges, feats = {}, {}, {}
for line in lines[2 + n :]:
    kind, idx, *rest = line.split()
    idx = int(idx)
    if kind == "STARTED":
        size[idx] = int(rest[0])
    elif kind == "COV":
        edges[idx] = set(map(int, rest))
    elif kind == "FT":
        feats[idx] = set(map(int, rest))

is_seed = {i: os.path.basename(p).startswith("seed-") for i, p in enumerate(paths)}
keep = {i for i in range(n) if is_seed[i]}
covered_e = set().union(*(edges.get(i, set()) for i in keep))
covered_f = set().union(*(feats.get(i, set()) for i in keep))
for table, covered in ((edges, covered_e), (feats, covered_f)):
    while len(keep) < cap:
        gains = [(len(table.get(i, set()) - covered), -size.get(i, 0), i) for i in range(n) if i not in keep]
        if not gains:
            break
        gain, _, best = max(gains)
        if gain == 0:
            break
        keep.add(best)
        covered |= table[best]
        covered_e |= edges.get(best, set())
        covered_f |= feats.get(best, set())

all_e = set().union(*edges.values()) if edges else set()
removed = 0
for i, p in enumerate(paths):
    if i not in keep:
        os.remove(p)
        removed += 1
print(f"{target}: kept {len(keep)} of {n} inputs ({sum(is_seed.values())} seeds), "
      f"{len(covered_e)} of {len(all_e)} edges; removed {removed}")
