#!/usr/bin/env python3
"""Loads a recast compressed-tensors output with the compressed-tensors library and checks that
the library decompresses every quantized weight to exactly recast's dequantized weights.

    python bench/e2e/ct_decompress_check.py --recast target/release/recast OUT_DIR [OUT_DIR ...]

For each directory: `quantization_config` is parsed with the library's own pydantic model
(`QuantizationConfig`, which forbids unknown keys); each quantized module's tensors are
decompressed by the compressor registered for its group's format; `recast convert OUT_DIR
--dtype f32` gives recast's dequantized weights; the two must be bit-identical (as the scale's
dtype, which is what the library returns). Pinned: compressed-tensors 0.20.0, torch 2.15.0.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationConfig
from safetensors.torch import load_file


def check(recast: str, d: Path) -> bool:
    cfg = json.loads((d / "config.json").read_text())["quantization_config"]
    qc = QuantizationConfig.model_validate(cfg)
    saved = load_file(str(d / "model.safetensors"))
    with tempfile.TemporaryDirectory() as t:
        subprocess.run([recast, "convert", str(d), "-o", t, "--dtype", "f32"], check=True, capture_output=True)
        dense = load_file(str(Path(t) / "model.safetensors"))
    modules = sorted({k.rsplit(".", 1)[0] for k in saved if k.endswith((".weight_scale",))})
    ok, worst = 0, 0.0
    for m in modules:
        group = next(g for g in qc.config_groups.values()
                     if "Linear" in g.targets or m in g.targets)
        fmt = group.format or qc.format
        local = {k[len(m) + 1:]: v for k, v in saved.items() if k.startswith(m + ".")}
        lib = BaseCompressor.get_value_from_registry(fmt).decompress(local, group)["weight"]
        mine = dense[m + ".weight"].to(lib.dtype)
        if torch.equal(lib.view(torch.int16 if lib.element_size() == 2 else torch.int32),
                       mine.view(torch.int16 if mine.element_size() == 2 else torch.int32)):
            ok += 1
        else:
            worst = max(worst, (lib.float() - mine.float()).abs().max().item())
    print(f"{d.name}: format {qc.format}, {len(modules)} quantized modules, {ok} bit-identical"
          + ("" if ok == len(modules) else f", max |diff| {worst:.3g}"))
    return ok == len(modules)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recast", required=True)
    ap.add_argument("dirs", nargs="+", type=Path)
    a = ap.parse_args()
    sys.exit(0 if all([check(a.recast, d) for d in a.dirs]) else 1)


if __name__ == "__main__":
    main()
