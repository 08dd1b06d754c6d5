#!/usr/bin/env python3
"""The web page of `rar serve` in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by python3-selenium) loads the page, picks a class, generates, and checks
that the images appear and decode; then saves a screenshot.

    tests/browser/page_test.py RAR GENERATOR TOKENIZER [SCREENSHOT.png]

Exit 0: passed. Exit 77: skipped (no chromium / chromium-driver / selenium here; `make
browser-test` installs them). Anything else: failed.
"""
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
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    rar, generator, tokenizer = sys.argv[1:4]
    shot = sys.argv[4] if len(sys.argv) > 4 else None
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
                               "--precision", "fp32", "--decode-precision", "fp32", "--port", str(port)],
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
            browser.get(f"http://127.0.0.1:{port}/?n=3&cfg=2&seed=7")
            wait = WebDriverWait(browser, 60)
            wait.until(lambda b: "classes" in b.find_element(By.ID, "status").text)
            cls = browser.find_element(By.ID, "cls")
            cls.clear()
            cls.send_keys("4")
            assert browser.find_element(By.ID, "n").get_attribute("value") == "3", "state from the URL not applied"
            browser.find_element(By.ID, "go").click()
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery img")) == 3)
            wait.until(lambda b: " s" in b.find_element(By.ID, "status").text and "images in" in b.find_element(By.ID, "status").text)
            imgs = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
            widths = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in imgs]
            assert all(w == 256 for w in widths), f"images did not decode: {widths}"
            links = browser.find_elements(By.CSS_SELECTOR, "#gallery a[download]")
            assert len(links) == 3 and all(l.get_attribute("href").startswith("data:image/png;base64,") for l in links)
            assert "cls=4" in browser.current_url and "seed=7" in browser.current_url, browser.current_url
            if shot:
                browser.save_screenshot(shot)
            print(f"passed: 3 images shown ({browser.find_element(By.ID, 'status').text})")
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
