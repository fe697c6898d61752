#!/usr/bin/env python3
"""Compares two GGUF files with the `gguf` Python package's GGUFReader.

    python bench/convert/compare_gguf.py A.gguf B.gguf [--allow-meta general.name,general.size_label]

Tensors: the same names in the same order, the same ggml types and shapes, and the same data
bytes (per-tensor sha256). Metadata: every key/value pair, except the GGUF.* header fields
and the keys named by --allow-meta, must be present in both with equal values (arrays are
compared element by element). Prints a report; exit status 0 when they agree.
"""
import argparse
import hashlib
import sys

import gguf
import numpy as np


def field_value(f):
    """A comparable Python value for one metadata field."""
    types = f.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        return [f.parts[i].tolist() for i in f.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    return f.parts[f.data[0]].tolist()


def tensors(r):
    out = []
    for t in r.tensors:
        data = np.ascontiguousarray(t.data)
        h = hashlib.sha256(memoryview(data).cast("B")).hexdigest()
        out.append((t.name, t.tensor_type.name, [int(x) for x in t.shape], int(t.n_bytes), h))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--allow-meta", default="general.name,general.size_label")
    args = ap.parse_args()
    allowed = set(filter(None, args.allow_meta.split(",")))
    print(f"gguf package: {gguf.__file__}")
    ra, rb = gguf.GGUFReader(args.a), gguf.GGUFReader(args.b)
    problems = []

    ta, tb = tensors(ra), tensors(rb)
    na, nb = [t[0] for t in ta], [t[0] for t in tb]
    if sorted(na) != sorted(nb):
        problems.append(f"tensor names differ: only in A {sorted(set(na) - set(nb))}, only in B {sorted(set(nb) - set(na))}")
    elif na != nb:
        print("note: same tensor names, different order")
    bym = {t[0]: t for t in tb}
    same, nbytes = 0, 0
    types = {}
    for t in ta:
        u = bym.get(t[0])
        if u is None:
            continue
        if t[1:] != u[1:]:
            problems.append(f"tensor {t[0]}: A {t[1]} {t[2]} {t[3]} B {u[1]} {u[2]} {u[3]} (sha256 {'equal' if t[4] == u[4] else 'differ'})")
        else:
            same += 1
            nbytes += t[3]
            types[t[1]] = types.get(t[1], 0) + 1
    print(f"tensors: {len(ta)} in A, {len(tb)} in B; {same} identical (name, type, shape, sha256 of data), {nbytes} bytes; types {types}")

    def meta(r):
        return {k: field_value(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}

    ma, mb = meta(ra), meta(rb)
    diffs = []
    for k in sorted(set(ma) | set(mb)):
        va, vb = ma.get(k, "<absent>"), mb.get(k, "<absent>")
        if va != vb:
            short = lambda v: (repr(v)[:80] + "...") if len(repr(v)) > 80 else repr(v)
            diffs.append((k, short(va), short(vb)))
    print(f"metadata: {len(ma)} keys in A, {len(mb)} in B; {len(diffs)} differ")
    for k, va, vb in diffs:
        tag = "allowed" if k in allowed else "DIFFERS"
        print(f"  {tag}: {k}: A={va} B={vb}")
        if k not in allowed:
            problems.append(f"metadata {k} differs")

    if problems:
        print("PROBLEMS:")
        for p in problems:
            print("  " + p)
        print("RESULT: FAIL")
        sys.exit(1)
    print("RESULT: PASS (tensor data identical; metadata equal except allowed keys)")


if __name__ == "__main__":
    main()
