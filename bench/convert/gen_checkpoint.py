#!/usr/bin/env python3
"""Writes a seeded, deterministic Llama-shaped Hugging Face checkpoint in BF16 for the
conversion benchmark (bench/convert/run.sh).

    python bench/convert/gen_checkpoint.py OUT_DIR [--seed 0] [--shard-size 2e9]
        [--hidden 2048 --layers 24 --intermediate 8192 --heads 32 --kv-heads 8 --vocab 128256]

Defaults give ~3.97 GB of weights (1.99 G parameters) in two ~2 GB safetensors shards, with
`model.safetensors.index.json`, `config.json` (LlamaForCausalLM, bfloat16, untied lm_head) and
the SentencePiece tokenizer files of tests/fixtures/tiny/llama (its vocabulary is smaller than
`vocab_size`; both converters pad it).

Weights are N(0, 1) * 0.02 (norm weights are 1.0), drawn from numpy's PCG64 seeded per tensor
(seed, tensor index), so every tensor's bytes depend only on the seed and its name's position,
not on the chunking. Conversion to bf16 rounds to nearest even. Tensors are generated and
written in chunks of --chunk elements, so peak memory is a few hundred MB whatever the model
size. Prints a JSON summary (total bytes, shard sizes, largest tensor) on stdout.
"""
import argparse
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FIXTURE = ROOT / "tests/fixtures/tiny/llama"
TOKENIZER_FILES = ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"]


def tensor_list(a):
    """HF Llama tensor names and shapes, in the order transformers saves them."""
    head_dim = a.hidden // a.heads
    q, kv = a.heads * head_dim, a.kv_heads * head_dim
    out = [("model.embed_tokens.weight", (a.vocab, a.hidden))]
    for i in range(a.layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (q, a.hidden)),
            (p + "self_attn.k_proj.weight", (kv, a.hidden)),
            (p + "self_attn.v_proj.weight", (kv, a.hidden)),
            (p + "self_attn.o_proj.weight", (a.hidden, q)),
            (p + "mlp.gate_proj.weight", (a.intermediate, a.hidden)),
            (p + "mlp.up_proj.weight", (a.intermediate, a.hidden)),
            (p + "mlp.down_proj.weight", (a.hidden, a.intermediate)),
            (p + "input_layernorm.weight", (a.hidden,)),
            (p + "post_attention_layernorm.weight", (a.hidden,)),
        ]
    out += [("model.norm.weight", (a.hidden,)), ("lm_head.weight", (a.vocab, a.hidden))]
    return out


def f32_to_bf16_bits(x):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even (inputs are finite)."""
    u = x.view(np.uint32)
    u = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (u >> np.uint32(16)).astype(np.uint16)


def write_tensor(f, idx, name, shape, seed, chunk):
    n = int(np.prod(shape))
    if name.endswith("norm.weight"):
        f.write(np.full(n, 0x3F80, dtype="<u2").tobytes())  # bf16 1.0
        return
    rng = np.random.Generator(np.random.PCG64([seed, idx]))
    left = n
    while left:
        k = min(chunk, left)
        x = rng.standard_normal(k, dtype=np.float32)
        x *= np.float32(0.02)
        f.write(f32_to_bf16_bits(x).astype("<u2", copy=False).tobytes())
        left -= k


def shard_plan(tensors, shard_size):
    """Greedy split in order: a new shard starts when adding a tensor would pass shard_size."""
    shards, cur, cur_bytes = [], [], 0
    for i, (name, shape) in enumerate(tensors):
        nb = int(np.prod(shape)) * 2
        if cur and cur_bytes + nb > shard_size:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(i)
        cur_bytes += nb
    if cur:
        shards.append(cur)
    return shards


def header_bytes(tensors, idxs):
    hdr, off = {"__metadata__": {"format": "pt"}}, 0
    for i in idxs:
        name, shape = tensors[i]
        nb = int(np.prod(shape)) * 2
        hdr[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # data section 8-byte aligned
    return h


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-size", type=float, default=2e9, help="max tensor bytes per shard")
    ap.add_argument("--chunk", type=int, default=1 << 24, help="elements generated at a time")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=128256)
    a = ap.parse_args()

    a.out.mkdir(parents=True, exist_ok=True)
    for old in a.out.glob("model*.safetensors*"):
        old.unlink()
    tensors = tensor_list(a)
    shards = shard_plan(tensors, a.shard_size)
    n = len(shards)
    weight_map, total = {}, 0
    for s, idxs in enumerate(shards):
        fname = f"model-{s + 1:05d}-of-{n:05d}.safetensors"
        h = header_bytes(tensors, idxs)
        with open(a.out / fname, "wb", buffering=1 << 20) as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for i in idxs:
                name, shape = tensors[i]
                write_tensor(f, i, name, shape, a.seed, a.chunk)
                weight_map[name] = fname
                total += int(np.prod(shape)) * 2
        print(f"wrote {fname}", file=sys.stderr)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (a.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "dtype": "bfloat16",
        "torch_dtype": "bfloat16",
        "head_dim": a.hidden // a.heads,
        "hidden_act": "silu",
        "hidden_size": a.hidden,
        "initializer_range": 0.02,
        "intermediate_size": a.intermediate,
        "max_position_embeddings": 8192,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": a.heads,
        "num_hidden_layers": a.layers,
        "num_key_value_heads": a.kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
        "tie_word_embeddings": False,
        "transformers_version": "5.24.0",
        "use_cache": True,
        "vocab_size": a.vocab,
    }
    (a.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER_FIXTURE / name, a.out / name)

    largest = max(tensors, key=lambda t: int(np.prod(t[1])))
    summary = {
        "seed": a.seed,
        "tensors": len(tensors),
        "params": total // 2,
        "total_size": total,
        "shard_files": {f"model-{s + 1:05d}-of-{n:05d}.safetensors": (a.out / f"model-{s + 1:05d}-of-{n:05d}.safetensors").stat().st_size for s in range(n)},
        "largest_tensor": {"name": largest[0], "shape": list(largest[1]), "bf16_bytes": int(np.prod(largest[1])) * 2, "f16_bytes": int(np.prod(largest[1])) * 2},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
