#!/usr/bin/env python3
"""Expected outputs of Pillow's resize and of the ADM center crop (guided-diffusion's
center_crop_arr), for the C++ transforms tests. Needs Pillow and NumPy (developer machine only;
the outputs are committed). Run: python3 tests/data/make_pil_fixtures.py"""
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def center_crop_arr(pil_image, image_size):
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


rng = np.random.default_rng(0)
src = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
# a smooth part too, so rounding paths other than clipping are exercised
src[:, :20] = (np.linspace(0, 255, 37)[:, None, None] * np.ones((1, 20, 3))).astype(np.uint8)
img = Image.fromarray(src)
out = {"src": src,
       "bicubic_up": np.array(img.resize((71, 45), resample=Image.BICUBIC)),
       "bicubic_down": np.array(img.resize((19, 13), resample=Image.BICUBIC)),
       "box_half": np.array(img.resize((26, 18), resample=Image.BOX)),
       "adm_16": center_crop_arr(img, 16),
       "adm_8": center_crop_arr(img, 8)}
grey = Image.fromarray(src[:, :, 0])
out["grey_bicubic"] = np.array(grey.resize((30, 22), resample=Image.BICUBIC))[:, :, None]
np.savez(os.path.join(HERE, "pil_resize.npz"), **out)
