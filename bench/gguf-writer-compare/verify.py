#!/usr/bin/env python3
"""Check GGUF files against ggml's layout rules and compare their tensor bytes.

Usage: verify.py [--probe] FILE...

For each FILE, two independent checks:
  1. `gguf.GGUFReader` (PyPI `gguf`) must load it (reported as "GGUFReader ok/FAILED").
     gguf 0.17.1 predates ggml type 39 (MXFP4), so it cannot load MXFP4 files at all.
  2. A small header parser here applies the rules ggml's gguf_init_from_file enforces
     (shared/research/formats.md §2.1-2.2):
       * tensor i's offset == sum over j<i of align(nbytes_j)   (sequential, each padded)
       * data section starts at align(end of tensor infos)
       * file size == data_start + sum(align(nbytes))            (the last tensor padded too;
         ggml reads the whole padded blob when it loads data)
     and hashes each tensor's bytes.

Without --probe the files must hold the same tensors (name, ggml dims, type, bytes) and
pass both checks: exit status 1 if not. With --probe (the `types` mode's small files) the
files are only reported, and tensor bytes are checked against the pattern written (tensor
`a` all 0x11, `b` all 0x22).
"""
import hashlib
import mmap
import os
import struct
import sys

# (block size, bytes per block) per ggml type id, from ggml type_traits.
SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
         20: (32, 18), 30: (1, 2), 39: (32, 17)}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def align(x, a):
    return (x + a - 1) // a * a


class Cur:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v[0]

    def string(self):
        n = self.take("Q")
        s = bytes(self.b[self.p:self.p + n]).decode()
        self.p += n
        return s

    def value(self, ty):
        if ty == 8:
            return self.string()
        if ty == 9:
            et, n = self.take("I"), self.take("Q")
            return [self.value(et) for _ in range(n)]
        fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q",
               11: "q", 12: "d"}[ty]
        return self.take(fmt)


def layout(path, probe):
    """Returns (tensors, problems) from a raw parse and ggml's rules."""
    with open(path, "rb") as f:
        b = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    c = Cur(b)
    if b[:4] != b"GGUF":
        return [], ["bad magic"]
    c.p = 4
    version, nt, nkv = c.take("I"), c.take("Q"), c.take("Q")
    kv = {}
    for _ in range(nkv):
        k = c.string()
        kv[k] = c.value(c.take("I"))
    a = kv.get("general.alignment", 32)
    infos = []
    for _ in range(nt):
        name = c.string()
        nd = c.take("I")
        ne = [c.take("Q") for _ in range(nd)]
        ty, off = c.take("I"), c.take("Q")
        infos.append((name, ne, ty, off))
    data_start = align(c.p, a)
    problems = []
    if version != 3:
        problems.append(f"version {version}")
    expect = 0
    tensors = []
    for name, ne, ty, off in infos:
        if ty not in SIZES:
            problems.append(f"tensor '{name}': type {ty} not in this checker's table")
            continue
        bs, ts = SIZES[ty]
        n = 1
        for d in ne:
            n *= d
        nbytes = n // bs * ts
        if off != expect:
            problems.append(f"tensor '{name}' offset {off}, ggml expects {expect}")
        raw = b[data_start + off:data_start + off + nbytes]
        if len(raw) != nbytes:
            problems.append(f"tensor '{name}' runs past end of file")
        if probe:
            want = {"a": 0x11, "b": 0x22}.get(name)
            if want is not None and raw != bytes([want]) * nbytes:
                problems.append(f"tensor '{name}' bytes differ from what was written")
        tensors.append((name, tuple(ne), ty, hashlib.sha256(raw).hexdigest()))
        expect += align(nbytes, a)
    need = data_start + expect
    if len(b) < need:
        problems.append(f"file is {len(b)} B but ggml reads a {expect} B padded data blob "
                        f"and needs {need} B (last tensor not padded?)")
    elif len(b) > need:
        problems.append(f"file is {len(b)} B, {len(b) - need} B beyond the padded data region")
    return tensors, problems


def reader_check(path):
    try:
        from gguf import GGUFReader
        r = GGUFReader(path, "r")
        return f"GGUFReader ok ({len(r.tensors)} tensors)", True
    except Exception as e:  # a reader failure is a result too
        return f"GGUFReader FAILED: {e!r}", False


def main(argv):
    probe = "--probe" in argv
    files = [x for x in argv if x != "--probe"]
    results = {}
    bad = False
    for p in files:
        rd, ok = reader_check(p)
        try:
            tensors, problems = layout(p, probe)
        except Exception as e:
            tensors, problems = [], [f"unparseable: {e!r}"]
        bad |= not ok or bool(problems)
        results[p] = tensors
        status = "ggml layout OK" if not problems else "ggml layout PROBLEMS: " + "; ".join(problems)
        print(f"{os.path.basename(p)}: {os.path.getsize(p)} B; {rd}; {status}")
        if not probe:
            h = hashlib.sha256("".join(t[3] for t in tensors).encode()).hexdigest()
            print(f"  {len(tensors)} tensors, digest over per-tensor sha256: {h}")
    if not probe and len(results) > 1:
        ref_path, ref = next(iter(results.items()))
        for p, ts in results.items():
            same = ts == ref
            bad |= not same
            print(f"tensors of {os.path.basename(p)} vs {os.path.basename(ref_path)}: "
                  f"{'IDENTICAL (names, dims, types, bytes)' if same else 'DIFFER'}")
    return 1 if bad and not probe else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
