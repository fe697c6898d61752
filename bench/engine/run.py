#!/usr/bin/env python3
"""Prefill throughput of recast's reference engine beside PyTorch (transformers) and llama.cpp
(llama-cpp-python), all f32 and 2 threads, in one run; plus peak RSS of recast in resident and
layer-streaming mode. Issue 3, acceptance 4.

Usage:
  cargo build --release -p recast-validate --example prefill
  python bench/engine/run.py --hf <SmolLM2 HF dir from `recast convert … --dtype f32`> [--reps 3]
It writes an F32 GGUF of the same model with recast for llama.cpp.

recast and PyTorch compute the logits of every position (what golden files hold). llama.cpp
is timed twice: as llama-cpp-python runs by default (`logits_all=False`: the LM head only for
the last position, about 21 % fewer FLOPs for this model) and with `logits_all=True` (the same
work as the other two). Both ratios are reported.
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFILL = ROOT / "target/release/examples/prefill"
RECAST = ROOT / "target/release/recast"


def tokens(n, vocab):
    return [(i * 7919 + 13) % vocab for i in range(n)]


def recast_run(model, n, stream=False):
    env = dict(os.environ)
    if stream:
        env["RECAST_STREAM"] = "1"
    out = subprocess.run(["/usr/bin/time", "-v", str(PREFILL), str(model), str(n), "2"], capture_output=True, text=True, env=env, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["peak_rss_mb"] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM
    from llama_cpp import Llama

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(a.hf, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    tmp = tempfile.mkdtemp()
    gguf = Path(tmp) / "f32.gguf"
    subprocess.run([str(RECAST), "convert", a.hf, "-o", str(gguf), "--dtype", "f32"], check=True, capture_output=True)
    llms = {
        all_logits: Llama(model_path=str(gguf), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=2, n_threads_batch=2,
                          logits_all=all_logits, verbose=False)
        for all_logits in (False, True)
    }

    rows = []
    for n in (128, 512):
        ids = tokens(n, vocab)
        rc = [recast_run(a.hf, n) for _ in range(a.reps)]
        pt, lc, la = [], [], []
        for _ in range(a.reps):
            x = torch.tensor([ids])
            with torch.no_grad():
                t = time.perf_counter(); model(x); pt.append(time.perf_counter() - t)
            for all_logits, times in ((False, lc), (True, la)):
                llms[all_logits].reset()
                t = time.perf_counter(); llms[all_logits].eval(ids); times.append(time.perf_counter() - t)
        r_s = statistics.median(r["seconds"] for r in rc)
        row = {"tokens": n, "recast_tok_s": n / r_s, "pytorch_tok_s": n / statistics.median(pt), "llamacpp_tok_s": n / statistics.median(lc),
               "llamacpp_all_logits_tok_s": n / statistics.median(la),
               "recast_resident_rss_mb": max(r["peak_rss_mb"] for r in rc)}
        row["vs_pytorch"] = row["recast_tok_s"] / row["pytorch_tok_s"]
        row["vs_llamacpp"] = row["recast_tok_s"] / row["llamacpp_tok_s"]
        row["vs_llamacpp_all_logits"] = row["recast_tok_s"] / row["llamacpp_all_logits_tok_s"]
        s = recast_run(a.hf, n, stream=True)
        row["recast_streaming_tok_s"], row["recast_streaming_rss_mb"] = s["tokens_per_s"], s["peak_rss_mb"]
        rows.append(row)
    print(json.dumps({"model": a.hf, "threads": 2, "reps": a.reps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
