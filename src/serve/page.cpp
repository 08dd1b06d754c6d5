// page.cpp — see page.h.
#include "serve/page.h"

namespace rar::serve {

const std::string& page_html() {
  static const std::string html = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>RAR — class-conditional image generation</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{padding:12px 20px;background:#223;color:#eee}header h1{margin:0;font-size:20px}
main{display:flex;gap:20px;padding:20px;flex-wrap:wrap}
form{background:#fff;padding:16px;border-radius:8px;min-width:280px;max-width:320px;box-shadow:0 1px 3px #0002}
label{display:block;margin:10px 0 2px;font-size:13px;color:#555}
input,select,button{width:100%;box-sizing:border-box;padding:6px;font-size:14px}
button{margin-top:14px;background:#335;color:#fff;border:0;border-radius:4px;padding:10px;cursor:pointer}
button:disabled{background:#889}
#status{margin-top:10px;font-size:13px;color:#444;min-height:1.2em}
#gallery{display:flex;flex-wrap:wrap;gap:10px;align-content:flex-start;flex:1}
figure{margin:0;background:#fff;padding:6px;border-radius:6px;box-shadow:0 1px 3px #0002;text-align:center}
figure img{display:block;width:192px;height:192px;image-rendering:auto}
figcaption{font-size:12px;color:#555;margin-top:4px}
</style></head><body>
<header><h1>RAR — class-conditional image generation</h1></header>
<main>
<form id="f" onsubmit="return false">
  <label for="cls">Class</label>
  <input id="cls" list="names" placeholder="class id or name">
  <datalist id="names"></datalist>
  <label for="n">Images</label><input id="n" type="number" min="1" value="4">
  <label for="cfg">Guidance scale</label><input id="cfg" type="number" step="0.1" min="0" value="4">
  <label for="cfg_power">Guidance power</label><input id="cfg_power" type="number" step="0.05" min="0" value="0">
  <label for="temperature">Temperature</label><input id="temperature" type="number" step="0.01" min="0.01" value="1">
  <label for="top_k">Top-k (0 = off)</label><input id="top_k" type="number" min="0" value="0">
  <label for="top_p">Top-p</label><input id="top_p" type="number" step="0.01" min="0.01" max="1" value="1">
  <label for="seed">Seed</label><input id="seed" type="number" min="0" value="0">
  <button id="go" type="submit">Generate</button>
  <div id="status"></div>
</form>
<div id="gallery"></div>
</main>
<script>
"use strict";
const fields = ["cls", "n", "cfg", "cfg_power", "temperature", "top_k", "top_p", "seed"];
let names = [], classes = 0;
const $ = id => document.getElementById(id);
function classId(text) {
  text = text.trim();
  if (/^\d+$/.test(text)) return parseInt(text, 10);
  const m = text.match(/^(\d+):/);
  if (m) return parseInt(m[1], 10);
  const i = names.indexOf(text);
  return i >= 0 ? i : NaN;
}
function loadState() {
  const q = new URLSearchParams(location.search);
  for (const f of fields) if (q.has(f)) $(f).value = q.get(f);
}
function saveState() {
  const q = new URLSearchParams();
  for (const f of fields) q.set(f, $(f).value);
  history.replaceState(null, "", "?" + q.toString());
}
async function init() {
  loadState();
  try {
    const info = await (await fetch("/v1/info")).json();
    names = info.class_names || [];
    classes = info.classes;
    $("n").max = info.limits.max_images_per_request;
    const dl = $("names");
    for (let i = 0; i < classes; i++) {
      const o = document.createElement("option");
      o.value = names[i] ? i + ": " + names[i] : String(i);
      dl.appendChild(o);
    }
    if (!$("cls").value) $("cls").value = names[0] ? "0: " + names[0] : "0";
    $("status").textContent = classes + " classes, up to " + info.limits.max_images_per_request + " images per request";
  } catch (e) { $("status").textContent = "cannot reach the server: " + e; }
}
function addImage(ev, t0) {
  const fig = document.createElement("figure");
  const a = document.createElement("a");
  a.href = "data:image/png;base64," + ev.png;
  a.download = "rar_class" + ev.class + "_seed" + ev.seed + "_" + ev.index + ".png";
  const img = document.createElement("img");
  img.onload = () => { if (img.naturalWidth <= 64) img.style.imageRendering = "pixelated"; };  // small images: crisp pixels
  img.src = a.href; img.alt = "class " + ev.class;
  a.appendChild(img); fig.appendChild(a);
  const cap = document.createElement("figcaption");
  cap.textContent = (names[ev.class] || "class " + ev.class) + " · " + ((performance.now() - t0) / 1000).toFixed(2) + " s";
  fig.appendChild(cap);
  $("gallery").appendChild(fig);
}
async function generate() {
  const id = classId($("cls").value);
  if (!(id >= 0 && id < classes)) { $("status").textContent = "unknown class: " + $("cls").value; return; }
  saveState();
  const body = {class: id, n: +$("n").value, cfg: +$("cfg").value, cfg_power: +$("cfg_power").value,
                temperature: +$("temperature").value, top_k: +$("top_k").value, top_p: +$("top_p").value,
                seed: +$("seed").value};
  $("gallery").innerHTML = ""; $("go").disabled = true; $("status").textContent = "generating…";
  const t0 = performance.now();
  try {
    const res = await fetch("/v1/generate?stream=1", {method: "POST", headers: {"Content-Type": "application/json"},
                                                       body: JSON.stringify(body)});
    if (!res.ok) { $("status").textContent = "error: " + ((await res.json()).error || res.status); return; }
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = "", got = 0;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        const type = (block.match(/^event: (.*)$/m) || [])[1], data = (block.match(/^data: (.*)$/m) || [])[1];
        if (!data) continue;
        const ev = JSON.parse(data);
        if (type === "image") { addImage(ev, t0); got++; $("status").textContent = got + " / " + body.n + " images"; }
        else if (type === "done") $("status").textContent = body.n + " images in " + ev.seconds.toFixed(2) + " s";
        else if (type === "error") $("status").textContent = "error: " + ev.error;
      }
    }
  } catch (e) { $("status").textContent = "error: " + e; }
  finally { $("go").disabled = false; }
}
$("go").addEventListener("click", generate);
init();
</script></body></html>
)HTML";
  return html;
}

}  // namespace rar::serve
