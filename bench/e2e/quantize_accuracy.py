#!/usr/bin/env python3
"""Accuracy of every shipped recipe on a real model, through `recast validate`, beside
llama.cpp's own numbers for the GGUF presets on the same tokens.

    python bench/e2e/quantize_accuracy.py --recast target/release/recast --hf HF_DIR \
        --golden GOLDEN.safetensors --work DIR [--f32-gguf F32.gguf] [--json OUT] [--md OUT]

GOLDEN is an f32 golden of the unquantized model (`recast golden HF_DIR -o GOLDEN --prompts
…`; its tokens are used for everything). For each recipe: `recast quantize HF_DIR` then
`recast validate OUT --golden GOLDEN --json` (the engine dequantizes the written layout as the
runtime would). For the GGUF presets llama.cpp also quantizes the F32 GGUF itself
(`llama_model_quantize`) and llama.cpp's engine (llama-cpp-python 0.3.36, logits_all) produces
logits for the golden's tokens, which `recast validate` compares with the same golden.
"""
import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
from safetensors import safe_open

RECIPES = [
    "cpu-gguf-q8_0", "cpu-gguf-q6_k", "cpu-gguf-q5_k_m", "cpu-gguf-q4_k_m", "cpu-gguf-q4_k_s", "cpu-gguf-q3_k_m",
    "cpu-gguf-q2_k", "nvidia-h100-fp8-block", "nvidia-h100-fp8-channel", "deepseek-fp8-block", "amd-mi300-fp8",
    "vllm-w8a8-int8", "vllm-w4a16-g128", "ascend-910b-w8a8-dynamic", "ascend-910b-w8a16", "ascend-910b-w4a16",
]
FTYPES = {"cpu-gguf-q8_0": 7, "cpu-gguf-q6_k": 18, "cpu-gguf-q5_k_m": 17, "cpu-gguf-q4_k_m": 15,
          "cpu-gguf-q4_k_s": 14, "cpu-gguf-q3_k_m": 12, "cpu-gguf-q2_k": 10}


def validate(recast, candidate, golden):
    r = subprocess.run([recast, "validate", str(candidate), "--golden", str(golden), "--json"], capture_output=True,
                       text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"validate {candidate} failed:\n{r.stderr}")
    o = json.loads(r.stdout)["overall"]
    return {"mean_kld": o["kld"]["mean"], "top1": o["top1"], "ppl_ratio": o["perplexity"]["ratio"]}


def llama_logits(model: Path, golden: Path, out: Path):
    from llama_cpp import Llama
    with safe_open(str(golden), "np") as f:
        tokens, lengths = f.get_tensor("tokens"), f.get_tensor("lengths")
    seq = tokens.shape[1]
    llm = Llama(model_path=str(model), n_ctx=max(64, seq + 8), n_threads=2, logits_all=True, verbose=False)
    vocab = llm.n_vocab()
    dump = np.zeros((len(lengths), seq, vocab), dtype=np.float32)
    for i, n in enumerate(lengths):
        llm.reset()
        llm.eval([int(t) for t in tokens[i, :n]])
        dump[i, :n] = np.array(llm.scores[:n], dtype=np.float32)
    np.save(out, dump)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recast", required=True)
    ap.add_argument("--hf", required=True, type=Path)
    ap.add_argument("--golden", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--f32-gguf", type=Path)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    f32 = a.f32_gguf or a.work / "f32.gguf"
    rows = []
    for recipe in a.recipes.split(","):
        gguf = recipe.startswith("cpu-gguf")
        out = a.work / (recipe + (".gguf" if gguf else ""))
        subprocess.run([a.recast, "quantize", str(a.hf), "-o", str(out), "--recipe", recipe], check=True,
                       capture_output=True)
        size = out.stat().st_size if gguf else sum(p.stat().st_size for p in out.glob("*.safetensors"))
        row = {"recipe": recipe, "bytes": size, "recast": validate(a.recast, out, a.golden)}
        if gguf:
            import llama_cpp
            if not f32.exists():
                subprocess.run([a.recast, "convert", str(a.hf), "-o", str(f32), "--dtype", "f32"], check=True)
            ref = a.work / f"llama-{recipe}.gguf"
            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype, p.nthread = FTYPES[recipe], 2
            assert llama_cpp.llama_model_quantize(str(f32).encode(), str(ref).encode(), p) == 0
            npy = a.work / f"llama-{recipe}.npy"
            llama_logits(ref, a.golden, npy)
            row["llama.cpp"] = validate(a.recast, npy, a.golden)
            # recast's file through llama.cpp's engine too (the bytes are identical; this checks it loads).
            npy2 = a.work / f"recast-{recipe}-llamacpp.npy"
            llama_logits(out, a.golden, npy2)
            row["recast_file_in_llama.cpp"] = validate(a.recast, npy2, a.golden)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    if a.md:
        lines = ["| recipe | size MB | recast engine: mean KLD | top-1 | llama.cpp engine on llama.cpp's quantization: mean KLD | top-1 |",
                 "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            l = r.get("llama.cpp")
            lines.append(f"| {r['recipe']} | {r['bytes'] / 1e6:.1f} | {r['recast']['mean_kld']:.5f} | "
                         f"{100 * r['recast']['top1']:.2f} % | " +
                         (f"{l['mean_kld']:.5f} | {100 * l['top1']:.2f} % |" if l else "— | — |"))
        a.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
