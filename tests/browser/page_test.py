#!/usr/bin/env python3
"""The web page of `rar serve` in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by python3-selenium) loads the page, picks a class, generates, and checks
that the images appear and decode; then saves a screenshot.

    tests/browser/page_test.py RAR GENERATOR TOKENIZER [SCREENSHOT.png] [--size 256] [--n 3]
                               [--cls 4] [--cfg 2] [--class-names names.txt]

(--size: the images' width in pixels; the other options choose what the screenshot shows.)

Exit 0: passed. Exit 77: skipped (no chromium / chromium-driver / selenium here; `make
browser-test` installs them). Anything else: failed.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

SKIP = 77


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description="rar serve's page in headless Chromium")
    ap.add_argument("rar")
    ap.add_argument("generator")
    ap.add_argument("tokenizer")
    ap.add_argument("shot", nargs="?")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--cls", default="4")
    ap.add_argument("--cfg", default="2")
    ap.add_argument("--class-names")
    args = ap.parse_args()
    rar, generator, tokenizer, shot, n = args.rar, args.generator, args.tokenizer, args.shot, args.n
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        chromium = None
    if not chromium or not driver:
        print("skipped: chromium, chromium-driver or python3-selenium is not installed (make browser-test installs them)")
        return SKIP

    port = free_port()
    server = subprocess.Popen([rar, "serve", "--generator", generator, "--tokenizer", tokenizer, "--device", "cpu",
                               "--precision", "fp32", "--decode-precision", "fp32", "--port", str(port)] +
                              (["--class-names", args.class_names] if args.class_names else []),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()  # "rar serve: http://127.0.0.1:PORT/ ..."
        if "rar serve: http://" not in line:
            print("server did not start:", line, server.stdout.read())
            return 1
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,900"):
            opts.add_argument(a)
        service = webdriver.ChromeService(executable_path=driver) if hasattr(webdriver, "ChromeService") else None
        browser = webdriver.Chrome(options=opts, service=service) if service else webdriver.Chrome(options=opts)
        try:
            browser.get(f"http://127.0.0.1:{port}/?n={n}&cfg={args.cfg}&seed=7")
            wait = WebDriverWait(browser, 60)
            wait.until(lambda b: "classes" in b.find_element(By.ID, "status").text)
            cls = browser.find_element(By.ID, "cls")
            cls.clear()
            cls.send_keys(args.cls)
            assert browser.find_element(By.ID, "n").get_attribute("value") == str(n), "state from the URL not applied"
            browser.find_element(By.ID, "go").click()
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery img")) == n)
            wait.until(lambda b: " s" in b.find_element(By.ID, "status").text and "images in" in b.find_element(By.ID, "status").text)
            imgs = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
            widths = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in imgs]
            assert all(w == args.size for w in widths), f"images did not decode to {args.size} pixels: {widths}"
            links = browser.find_elements(By.CSS_SELECTOR, "#gallery a[download]")
            assert len(links) == n and all(l.get_attribute("href").startswith("data:image/png;base64,") for l in links)
            assert f"cls={args.cls}" in browser.current_url and "seed=7" in browser.current_url, browser.current_url
            if shot:
                browser.save_screenshot(shot)
            print(f"passed: {n} images shown ({browser.find_element(By.ID, 'status').text})")
            return 0
        finally:
            browser.quit()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
