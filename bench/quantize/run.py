#!/usr/bin/env python3
"""Quantization throughput: recast vs llama.cpp (same F32 GGUF input, same thread count), and
recast's FP8-block layout vs a plain copy of its input. One run, side by side, as ratios.

    python bench/quantize/run.py --recast target/release/recast --hf HF_DIR --work DIR \
        [--threads 2] [--rounds 3] [--json OUT]

HF_DIR is an F32 Hugging Face checkpoint (e.g. SmolLM2-135M converted with
`recast convert SmolLM2-135M-Instruct.Q4_1.gguf -o HF_DIR --dtype f32`, or a generated
model: bench/convert/gen_checkpoint.py). The F32 GGUF both quantizers read is
`recast convert HF_DIR -o WORK/f32.gguf --dtype f32` (byte-identical tensors to llama.cpp's
converter). llama.cpp runs in-process through llama-cpp-python's `llama_model_quantize`
(llama-quantize's implementation; 0.3.36), with `nthread` = --threads; recast runs with
RAYON_NUM_THREADS = --threads. Output bytes are checked identical before timing counts.
Wall times include reading the input and writing (and fsyncing, for recast) the output;
recast also computes per-tensor error statistics and sha256 of its outputs for the manifest.
Peak RSS of recast is read from /usr/bin/time. The FP8 baseline is `cp input output && sync`.
"""
import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import gguf
import llama_cpp

PRESETS = {"Q8_0": (7, "cpu-gguf-q8_0"), "Q6_K": (18, "cpu-gguf-q6_k"), "Q4_K_M": (15, "cpu-gguf-q4_k_m")}


def drop(p: Path):
    if p.is_dir():
        subprocess.run(["rm", "-rf", str(p)], check=True)
    elif p.exists():
        p.unlink()


def llama(src: Path, dst: Path, ftype: int, threads: int) -> float:
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread = ftype, threads
    t = time.perf_counter()
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), p) == 0
    os.sync()
    return time.perf_counter() - t


def recast(binary: str, src: Path, dst: Path, recipe: str, threads: int):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "quantize", str(src), "-o", str(dst), "--recipe", recipe],
                       env=env, capture_output=True, text=True, check=True)
    secs = time.perf_counter() - t
    return secs, int(r.stderr.strip().splitlines()[-1]) / 1024


def same_tensor_data(a: Path, b: Path) -> bool:
    ta = {t.name: t.data.tobytes() for t in gguf.GGUFReader(str(a)).tensors}
    tb = {t.name: t.data.tobytes() for t in gguf.GGUFReader(str(b)).tensors}
    return ta == tb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recast", required=True)
    ap.add_argument("--hf", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    f32 = a.work / "f32.gguf"
    if not f32.exists():
        subprocess.run([a.recast, "convert", str(a.hf), "-o", str(f32), "--dtype", "f32"], check=True)
    in_bytes = f32.stat().st_size
    res = {"input": str(a.hf), "input_bytes": in_bytes, "threads": a.threads, "rounds": a.rounds, "results": {}}
    for preset, (ftype, recipe) in PRESETS.items():
        ref, mine = a.work / f"llama-{preset}.gguf", a.work / f"recast-{preset}.gguf"
        tl, tr, rss = [], [], []
        for _ in range(a.rounds):
            drop(ref)
            tl.append(llama(f32, ref, ftype, a.threads))
            drop(mine)
            s, m = recast(a.recast, f32, mine, recipe, a.threads)
            tr.append(s)
            rss.append(m)
        ident = same_tensor_data(ref, mine)
        ml, mr = statistics.median(tl), statistics.median(tr)
        res["results"][preset] = {"llama.cpp_s": tl, "recast_s": tr, "identical": ident, "recast_peak_rss_mb": max(rss),
                                  "speedup_vs_llama.cpp": ml / mr}
        print(f"{preset:7} llama.cpp {ml:6.2f}s  recast {mr:6.2f}s  ({ml / mr:4.2f}x)  identical={ident}  "
              f"recast RSS {max(rss):.0f} MB  input {in_bytes / mr / 1e6:.0f} MB/s")
    # FP8 block (compressed-tensors) from the F32 safetensors vs a plain copy of that input.
    src = next(a.hf.glob("*.safetensors"))
    st_bytes = sum(p.stat().st_size for p in a.hf.glob("*.safetensors"))
    tc, tf, rss = [], [], []
    for _ in range(a.rounds):
        cp_out = a.work / "copy.safetensors"
        drop(cp_out)
        t = time.perf_counter()
        subprocess.run(["cp", str(src), str(cp_out)], check=True)
        os.sync()
        tc.append(time.perf_counter() - t)
        out = a.work / "recast-fp8-block"
        drop(out)
        s, m = recast(a.recast, a.hf, out, "nvidia-h100-fp8-block", a.threads)
        tf.append(s)
        rss.append(m)
    mc, mf = statistics.median(tc), statistics.median(tf)
    res["results"]["FP8_BLOCK"] = {"copy_s": tc, "recast_s": tf, "recast_peak_rss_mb": max(rss),
                                   "ratio_vs_copy": mc / mf}
    print(f"FP8-blk cp+sync {mc:6.2f}s  recast {mf:6.2f}s  ({mc / mf:4.2f}x of copy speed)  "
          f"recast RSS {max(rss):.0f} MB  input {st_bytes / mf / 1e6:.0f} MB/s")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
