#!/usr/bin/env python3
"""Every relative link of the project's Markdown (README, DEVELOPERS, docs/, bench/, experiments/)
points at a file or folder that exists, and every `#anchor` into a Markdown file at one of its
headings. Exit 1 naming each broken link. Usage: tests/check_links.py [REPO]"""
import glob
import os
import re
import sys

repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
pages = [os.path.join(repo, p) for p in ("README.md", "DEVELOPERS.md") if os.path.exists(os.path.join(repo, p))]
for pattern in ("docs/**/*.md", "bench/*.md", "experiments/*.md"):
    pages += glob.glob(os.path.join(repo, pattern), recursive=True)


def anchors(md):
    out = set()
    for line in open(md, encoding="utf-8"):
        m = re.match(r"#+\s+(.*)", line)
        if m:  # GitHub's slugs: lower case, punctuation dropped, spaces to hyphens
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


bad, checked = [], 0
for page in pages:
    text = re.sub(r"```.*?```", "", open(page, encoding="utf-8").read(), flags=re.S)  # not in code blocks
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, mailto:
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        checked += 1
        name = os.path.relpath(page, repo)
        if not os.path.exists(full):
            bad.append(f"{name}: link to '{target}': no such file")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            bad.append(f"{name}: link to '{target}': no heading '#{anchor}' there")
for b in bad:
    print("check_links:", b)
print(f"check_links: {checked} links in {len(pages)} pages, {len(bad)} broken")
sys.exit(1 if bad or checked == 0 else 0)
