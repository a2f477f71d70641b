#!/usr/bin/env python3
"""Which crates own the resident pages of a running collector's code.

    benches/resident-code.py PID BINARY

Reads /proc/PID/pagemap (needs root) for the executable's text mapping and names the crates of
the symbols (`nm -C`) on each resident page. The kernel maps pages around every fault in
64 KiB windows, so a page counts even when only its neighbour ran: the figure is what the
process holds, not what it executed.
"""
import bisect
import collections
import re
import struct
import subprocess
import sys


def crate(name):
    n = re.sub(r"^<", "", name)
    n = re.sub(r"^(impl |dyn )", "", n)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", n)
    return m.group(1) if m else n.split("(")[0][:30]


def main(pid, exe):
    name = exe.split("/")[-1]
    ranges = []
    for line in open(f"/proc/{pid}/maps"):
        m = line.split()
        if len(m) > 5 and m[5].endswith(name) and "x" in m[1]:
            a, b = (int(x, 16) for x in m[0].split("-"))
            ranges.append((a, b))
    syms = []
    out = subprocess.run(["nm", "-C", "--defined-only", "-n", exe], capture_output=True, text=True).stdout
    for line in out.splitlines():
        p = line.split(" ", 2)
        if len(p) == 3 and p[1] in "tTwW":
            syms.append((int(p[0], 16), p[2]))
    addrs = [s[0] for s in syms]
    owners, total = collections.Counter(), 0
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for a, b in ranges:
            for page in range(a, b, 4096):
                pm.seek(page // 4096 * 8)
                if struct.unpack("<Q", pm.read(8))[0] >> 63 & 1:
                    total += 1
                    i = bisect.bisect_right(addrs, page) - 1
                    j = bisect.bisect_left(addrs, page + 4096)
                    names = {crate(syms[k][1]) for k in range(max(i, 0), max(j, i + 1))}
                    for n in names:
                        owners[n] += 1 / len(names)
    print(f"resident code: {total * 4 / 1024:.1f} MiB")
    for n, c in owners.most_common(25):
        print(f"{c * 4 / 1024:6.2f} MiB  {n}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
