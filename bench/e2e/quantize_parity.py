#!/usr/bin/env python3
"""Whole-file parity of `recast quantize` GGUF presets with llama.cpp's own quantizer.

For each preset, llama.cpp quantizes an F32 GGUF of the model (llama-cpp-python's
`llama_model_quantize`, i.e. llama-quantize, no imatrix) and recast quantizes the same model
straight from its Hugging Face directory (no intermediate file). The script compares every
tensor: ggml type, and data bytes; for tensors whose bytes differ it counts differing blocks.
It also times both (same thread count) when --time is given.

    python bench/e2e/quantize_parity.py --recast target/release/recast --hf HF_DIR --work DIR \
        [--presets Q8_0,Q6_K,...] [--threads 2] [--json OUT]

The F32 GGUF is written by `recast convert HF -o f32.gguf --dtype f32`, whose tensors are
byte-identical to llama.cpp's convert_hf_to_gguf.py (tests/llamacpp_parity.rs).
Reference versions: llama-cpp-python 0.3.36, gguf 0.17.1.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import gguf
import llama_cpp

PRESETS = {
    "Q8_0": (7, "cpu-gguf-q8_0"),
    "Q6_K": (18, "cpu-gguf-q6_k"),
    "Q5_K_M": (17, "cpu-gguf-q5_k_m"),
    "Q4_K_M": (15, "cpu-gguf-q4_k_m"),
    "Q4_K_S": (14, "cpu-gguf-q4_k_s"),
    "Q3_K_M": (12, "cpu-gguf-q3_k_m"),
    "Q2_K": (10, "cpu-gguf-q2_k"),
}


def llama_quantize(src: Path, dst: Path, ftype: int, threads: int) -> float:
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = threads
    t = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), p)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed ({rc}) for {dst}")
    return time.perf_counter() - t


def tensors(path: Path):
    r = gguf.GGUFReader(str(path))
    return {t.name: t for t in r.tensors}, r


def compare(a_path: Path, b_path: Path):
    a, ra = tensors(a_path)
    b, rb = tensors(b_path)
    out = {"tensors": len(a), "identical": 0, "type_mismatch": [], "byte_mismatch": [], "missing": []}
    for name, ta in a.items():
        tb = b.get(name)
        if tb is None:
            out["missing"].append(name)
            continue
        if ta.tensor_type != tb.tensor_type:
            out["type_mismatch"].append((name, ta.tensor_type.name, tb.tensor_type.name))
            continue
        da, db = bytes(ta.data.tobytes()), bytes(tb.data.tobytes())
        if da == db:
            out["identical"] += 1
            continue
        bs, ts = gguf.GGML_QUANT_SIZES[ta.tensor_type]
        na = np.frombuffer(da, dtype=np.uint8).reshape(-1, ts)
        nb = np.frombuffer(db, dtype=np.uint8).reshape(-1, ts)
        diff = int((na != nb).any(axis=1).sum())
        out["byte_mismatch"].append((name, ta.tensor_type.name, diff, len(na)))
    fa = ra.fields.get("general.file_type")
    fb = rb.fields.get("general.file_type")
    out["file_type"] = [int(fa.parts[-1][0]) if fa else None, int(fb.parts[-1][0]) if fb else None]
    return out


def run_recast(recast: str, hf: Path, out: Path, recipe: str, threads: int) -> float:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    t = time.perf_counter()
    subprocess.run([recast, "quantize", str(hf), "-o", str(out), "--recipe", recipe], check=True, env=env,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recast", required=True)
    ap.add_argument("--hf", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    f32 = a.work / "f32.gguf"
    if not f32.exists():
        subprocess.run([a.recast, "convert", str(a.hf), "-o", str(f32), "--dtype", "f32"], check=True)
    results = {}
    for preset in a.presets.split(","):
        ftype, recipe = PRESETS[preset]
        ref = a.work / f"llama-{preset}.gguf"
        mine = a.work / f"recast-{preset}.gguf"
        t_ref = llama_quantize(f32, ref, ftype, a.threads)
        t_mine = run_recast(a.recast, a.hf, mine, recipe, a.threads)
        c = compare(ref, mine)
        c["seconds"] = {"llama.cpp": round(t_ref, 3), "recast": round(t_mine, 3)}
        results[preset] = c
        ok = c["identical"] == c["tensors"] and not c["missing"]
        print(f"{preset:7} {'IDENTICAL' if ok else 'DIFFERS'}  {c['identical']}/{c['tensors']} tensors identical, "
              f"file_type {c['file_type']}, types differ {len(c['type_mismatch'])}, bytes differ "
              f"{[(n, t, f'{d}/{nb} blocks') for n, t, d, nb in c['byte_mismatch']][:6]}  "
              f"time llama.cpp {t_ref:.2f}s recast {t_mine:.2f}s")
        for m in c["type_mismatch"][:5]:
            print("   type:", m)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    bad = [p for p, c in results.items() if c["identical"] != c["tensors"] or c["missing"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
