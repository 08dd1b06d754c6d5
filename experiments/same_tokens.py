#!/usr/bin/env python3
"""The share of identical tokens in two .npy token arrays of the same shape [N, S] (int, C order),
and of whole sequences that are identical, with the standard library only: `same_tokens.py a.npy
b.npy` prints e.g. "97.31% (622,784 of 640,000); whole images identical: 61.20% (6,120 of 10,000)"."""
import ast
import struct
import sys


def read_npy(path):
    try:
        f = open(path, "rb")
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")
    with f:
        magic = f.read(6)
        if magic != b"\x93NUMPY":
            sys.exit(f"{path}: not a .npy file")
        major = f.read(2)[0]
        hlen = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))[0]
        header = ast.literal_eval(f.read(hlen).decode("latin1"))
        if header["descr"] not in ("<i8", "<u2", "<i4") or header["fortran_order"]:
            sys.exit(f"{path}: expected C-order int tokens, got {header}")
        return header["descr"], header["shape"], f.read()


da, sa, a = read_npy(sys.argv[1])
db, sb, b = read_npy(sys.argv[2])
if (da, sa) != (db, sb):
    sys.exit(f"shapes differ: {da}{sa} vs {db}{sb}")
size = {"<i8": 8, "<i4": 4, "<u2": 2}[da]
n = len(a) // size
same = sum(1 for i in range(0, len(a), size) if a[i:i + size] == b[i:i + size])
row = size * (sa[1] if len(sa) == 2 else n)
rows = len(a) // row
whole = sum(1 for i in range(0, len(a), row) if a[i:i + row] == b[i:i + row])
print(f"{100 * same / n:.2f}% ({same:,} of {n:,}); whole images identical: {100 * whole / rows:.2f}% ({whole:,} of {rows:,})")
