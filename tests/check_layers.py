#!/usr/bin/env python3
"""The include layers of docs/DESIGN.md §7, checked over every #include "folder/..." in src/.

A folder includes only folders of a lower layer; `model` and `data` share a layer, and within it
only data/tokenize_job may include model. Exit 1 naming each include that breaks a rule.
Usage: tests/check_layers.py [REPO]"""
import os
import re
import sys

LAYER = {"cli": 7, "bench": 6, "training": 5, "serve": 5, "eval": 4, "sampling": 3,
         "model": 2, "data": 2, "io": 1, "kernels": 0, "util": 0}
ALLOWED_SAME_LAYER = {("data/tokenize_job", "model")}  # the one crossing inside the model/data layer

repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
src = os.path.join(repo, "src")
bad = []
seen = 0
for root, _, files in os.walk(src):
    for f in sorted(files):
        path = os.path.join(root, f)
        rel = os.path.relpath(path, src)
        folder = rel.split(os.sep)[0]
        if folder not in LAYER:
            if os.sep in rel:
                bad.append(f"{rel}: folder '{folder}' has no layer in tests/check_layers.py (add it, and to DESIGN §7)")
            continue
        stem = os.path.splitext(rel)[0].replace(os.sep, "/")
        for n, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
            m = re.match(r'\s*#\s*include\s+"([a-z_]+)/', line)
            if not m or m.group(1) in (folder, "src"):  # "src/...": a generated header of the same folder
                continue
            target = m.group(1)
            seen += 1
            if target not in LAYER:
                bad.append(f"{rel}:{n}: includes '{target}/', a folder without a layer")
            elif LAYER[target] > LAYER[folder] or (LAYER[target] == LAYER[folder] and (stem, target) not in ALLOWED_SAME_LAYER):
                bad.append(f"{rel}:{n}: {folder} (layer {LAYER[folder]}) includes {target} (layer {LAYER[target]})")
for b in bad:
    print("check_layers:", b)
print(f"check_layers: {seen} includes across folders, {len(bad)} against the layers")
sys.exit(1 if bad or seen == 0 else 0)
