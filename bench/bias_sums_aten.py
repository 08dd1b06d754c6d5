#!/usr/bin/env python3
"""ATen's bias-gradient sums at the training step's shapes, measured with PyTorch on the GPU machine
(no build needed): the float32 column sums of each bf16 product gradient a block's backward sums
(qkv [M,3H], proj [M,H], fc1 [M,4H], fc2 [M,H], the adaLN's two products [M,2H] and [M,4H]), times
the blocks, plus the final layer's [M,2H] and the head's [M,1024]; M = 64 * 258 rows (batch 64).
What `rar bench train --profile` reports for `column_sums_partial` + `column_sums_total` (our kernel,
model::bias_gradient) is to be set beside the per-step sum printed here, on the same kind of GPU.
Usage: python3 bench/bias_sums_aten.py [rar_b rar_xl]"""
import sys
import torch

from fp8_products import timed  # beside this file: CUDA-event timing after three warm-up calls

PRESETS = {"rar_b": (768, 24), "rar_l": (1024, 24), "rar_xl": (1280, 32)}
M = 64 * 258


def main():
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name in sys.argv[1:] or ["rar_b", "rar_xl"]:
        H, L = PRESETS[name]
        per_block = [("qkv", 3 * H), ("proj", H), ("fc1", 4 * H), ("fc2", H), ("adaLN shifts", 2 * H), ("adaLN rest", 4 * H)]
        once = [("final adaLN", 2 * H), ("head", 1024)]
        print(f"\n{name}: M={M}, float32 sums of bf16 gradients (torch.sum(g, 0, dtype=float32))\n")
        print("| gradient | N | ms per call | GB/s read |")
        print("|---|---|---|---|")
        total = 0.0
        for label, n in per_block + once:
            g = torch.randn(M, n, device="cuda", dtype=torch.bfloat16)
            ms = timed(lambda: torch.sum(g, 0, dtype=torch.float32))
            print(f"| {label} | {n} | {ms:.4f} | {g.numel() * 2 / ms / 1e6:.0f} |")
            total += ms * (L if (label, n) in per_block else 1)
            del g
        gb = (sum(n for _, n in per_block) * L + sum(n for _, n in once)) * M * 2 / 1e9
        print(f"\nper step ({L} blocks): {total:.2f} ms for {gb:.1f} GB ({gb / total:.2f} TB/s)")


if __name__ == "__main__":
    main()
