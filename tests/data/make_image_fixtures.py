#!/usr/bin/env python3
"""Encoded images and what Pillow's Image.open(f).convert("RGB") (or "L" for grey) makes of them,
for the C++ image-decoding tests: 16-bit RGB/RGBA PNGs (Pillow keeps the high byte), RGBA and
grey+alpha PNGs (alpha dropped, not composited), a 2-bit grey PNG, a palette PNG with a tRNS
chunk (transparency ignored), and a CMYK JPEG (Adobe, stored inverted). The one deliberate
difference: a 16-bit grey PNG is read as v >> 8, where Pillow's "I;16" -> "L" conversion clips
every value above 255 to 255 (a near-white image) — its expected array here is v >> 8.
Needs Pillow and NumPy (developer machine only; the output is committed).
Run: python3 tests/data/make_image_fixtures.py"""
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(arr, color_type, depth, extra=b""):
    """A PNG written by hand (Pillow cannot write 16-bit RGB): rows of filter 0."""
    h, w = arr.shape[:2]
    if depth < 8:  # pack grey samples MSB first
        per = 8 // depth
        rows = []
        for y in range(h):
            vals = list(arr[y]) + [0] * ((-w) % per)
            rows.append(bytes(sum(int(v) << (8 - depth * (i + 1)) for i, v in enumerate(vals[k:k + per]))
                              for k in range(0, len(vals), per)))
    else:
        rows = [arr[y].astype(">u2" if depth == 16 else "u1").tobytes() for y in range(h)]
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def pil(data, mode):
    return np.array(Image.open(io.BytesIO(data)).convert(mode))


rng = np.random.default_rng(7)
out = {}


def case(name, data, expected):
    out[name + "_file"] = np.frombuffer(data, dtype=np.uint8)
    out[name + "_expected"] = expected if expected.ndim == 3 else expected[:, :, None]


rgb16 = rng.integers(0, 65536, size=(5, 6, 3), dtype=np.uint16)
case("rgb16", png(rgb16, 2, 16), pil(png(rgb16, 2, 16), "RGB"))
rgba16 = rng.integers(0, 65536, size=(5, 6, 4), dtype=np.uint16)
case("rgba16", png(rgba16, 6, 16), pil(png(rgba16, 6, 16), "RGB"))
rgba8 = rng.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
case("rgba8", png(rgba8, 6, 8), pil(png(rgba8, 6, 8), "RGB"))
la8 = rng.integers(0, 256, size=(5, 6, 2), dtype=np.uint8)
case("la8", png(la8, 4, 8), pil(png(la8, 4, 8), "L"))
grey2 = rng.integers(0, 4, size=(5, 7), dtype=np.uint8)
case("grey2", png(grey2, 0, 2), pil(png(grey2, 0, 2), "L"))
grey16 = rng.integers(0, 65536, size=(5, 6), dtype=np.uint16)
case("grey16", png(grey16, 0, 16), (grey16 >> 8).astype(np.uint8))
palette = rng.integers(0, 256, size=(4, 3), dtype=np.uint8)
index = rng.integers(0, 4, size=(5, 6), dtype=np.uint8)
extra = chunk(b"PLTE", palette.tobytes()) + chunk(b"tRNS", bytes([0, 128, 255, 7]))
case("palette_trns", png(index, 3, 8, extra), pil(png(index, 3, 8, extra), "RGB"))
cmyk = np.concatenate([rng.integers(0, 256, size=(16, 16, 4), dtype=np.uint8)], axis=2)
buf = io.BytesIO()
Image.fromarray(cmyk, mode="CMYK").save(buf, format="JPEG", quality=95)
case("cmyk_jpeg", buf.getvalue(), pil(buf.getvalue(), "RGB"))

np.savez(os.path.join(HERE, "pil_decode.npz"), **out)
print("wrote", os.path.join(HERE, "pil_decode.npz"), sorted(k for k in out if k.endswith("_file")))
