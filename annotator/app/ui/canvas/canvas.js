// The annotation canvas: runs once per component (gr.HTML js_on_load) with `element`,
// `trigger`, `props`, `server`, `watch` in scope. It draws the image, the mask layers and
// the prompt itself, so zoom, pan, opacity, hide, outlines, coverage and hover need no server.
// Browser -> server: messages `{kind: "actions", ...}` re-sending every action the server has
// not acknowledged yet (numbered), so none is lost. Each message also carries the view
// options, so the server keeps them without a request of their own. Once a frame has given
// the session's channel, a message goes straight to the server (`server.canvas_actions`,
// outside Gradio's queue) and its frame comes back at once; then `props.value = message;
// trigger("input")` lets the page's other components catch up. Without a channel, or when
// the direct call fails, that event carries the actions itself.
// Server -> browser: frames (annotator/app/canvas_frames.py), from the direct call or
// through watch("value").
// Keys: the canvas's own (KEYS below, digits, Tab, Space); the page's actions (accept,
// clear, undo, delete, review, images) are static/shortcuts.js's. The two sets never overlap.
(function () {
  "use strict";
  const root = element.querySelector(".acv");
  const stage = root.querySelector(".acv-stage");
  const canvas = root.querySelector(".acv-canvas");
  const ctx = canvas.getContext("2d");
  const statusEl = root.querySelector(".acv-status");
  const emptyEl = root.querySelector(".acv-empty");
  const zoomEl = root.querySelector(".acv-zoom");
  const legendEl = root.querySelector(".acv-legend");
  const helpEl = root.querySelector(".acv-help");
  const opacityEl = root.querySelector(".acv-opacity");
  const hideEl = root.querySelector(".acv-hide");
  const onlyEl = root.querySelector(".acv-only");
  const outlinesEl = root.querySelector(".acv-outlines");
  const coverageEl = root.querySelector(".acv-coverage");
  if (props.height) stage.style.setProperty("--acv-height", typeof props.height === "number" ? props.height + "px" : props.height);

  const DRAG_PX = 4;          // a press that moves less is a click
  const POINT_HIT_PX = 9;     // clicking this close to a prompt point removes it
  const MAX_ZOOM = 32;        // screen pixels per image pixel
  const MODES = ["positive", "negative", "box", "select"];  // the server's modes; brush and eraser are the canvas's
  const OPPOSITE = {positive: "negative", negative: "positive", box: "negative"};  // right / Alt+click
  const st = {
    img: null,        // {key, W, H, vw, vh, bitmap}
    crop: null,       // full-resolution crop {key, x, y, w, h, bitmap}
    layers: [],       // Uint32Array(vw * vh) of mask ids, layer 0 at the bottom
    preview: null,    // Uint32Array(vw * vh): masks segment everything found so far, over the layers
    top: null,        // Uint32Array(vw * vh): the topmost shown mask id per view pixel
    fill: null, fillCtx: null, edge: null, edgeCtx: null,  // mask colours and outlines, view size
    rows: new Map(),  // id -> table row
    classes: [], legend: [],
    prompt: {points: [], box: null, corner: null, mask: null, color: "#1e90ff"},
    promptMask: null, // canvas with the candidate tinted
    k: 1, ox: 0, oy: 0, fitted: true,  // screen = image * k + o (CSS pixels)
    opacity: 0.5, hideAll: false, onlySelected: false, outlines: true, coverage: false,
    hover: 0, tool: "positive", mode: "positive", brush: 12,  // brush radius in screen pixels
    press: null, spaceDown: false, pointer: null, stroke: null,
    seq: 0, pending: [], frame: 0, queued: 0, chain: Promise.resolve(), cropTimer: null, cropSeq: 0, scaleTimer: null,
    channel: null, direct: false, again: false,  // the direct path: its key, a call in flight, more to send
  };

  // when actions left and frames came and were drawn (the last 200: [kind, action seq or frame
  // number, time, the frame's ack]), for benchmarks/browser_latency.py
  const timings = [];
  function mark(kind, n, ack) { timings.push([kind, n, performance.now(), ack]); if (timings.length > 200) timings.shift(); }

  // -- coordinates ----------------------------------------------------------------------------
  function toImage(cx, cy) { return [(cx - st.ox) / st.k, (cy - st.oy) / st.k]; }
  function toScreen(x, y) { return [x * st.k + st.ox, y * st.k + st.oy]; }
  function local(e) { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  function inImage(x, y) { return st.img && x >= 0 && y >= 0 && x < st.img.W && y < st.img.H; }
  function fitK() {
    if (!st.img) return 1;
    return Math.min(canvas.clientWidth / st.img.W, canvas.clientHeight / st.img.H);
  }
  function fit() {
    if (!st.img) return;
    st.k = fitK();
    st.ox = (canvas.clientWidth - st.img.W * st.k) / 2;
    st.oy = (canvas.clientHeight - st.img.H * st.k) / 2;
    st.fitted = true;
    viewChanged();
  }
  function zoomAt(cx, cy, k) {
    if (!st.img) return;
    k = Math.max(Math.min(fitK(), 1) * 0.5, Math.min(MAX_ZOOM, k));
    const [x, y] = toImage(cx, cy);
    st.k = k; st.ox = cx - x * k; st.oy = cy - y * k; st.fitted = false;
    viewChanged();
  }
  function zoomBy(f) { zoomAt(canvas.clientWidth / 2, canvas.clientHeight / 2, st.k * f); }
  function viewChanged() {
    zoomEl.textContent = st.img ? Math.round(st.k * 100) + "%" : "";
    root.dataset.zoom = st.k.toFixed(4);
    scheduleCrop();
    schedulePromptScale();
    draw();
  }
  // The candidate comes at the scale the screen showed when it was asked for (a fraction of
  // the pixels, the same look); zoomed in well past that, it is asked for again, sharper.
  function screenScale() { return st.k * (window.devicePixelRatio || 1); }
  function schedulePromptScale() {
    clearTimeout(st.scaleTimer);
    const m = st.prompt.mask;
    if (!st.img || !m || !m.fw || m.fw >= st.img.vw || screenScale() <= 1.25 * m.fw / st.img.W) return;
    st.scaleTimer = setTimeout(() => send({type: "scale"}), 150);
  }

  // -- drawing ----------------------------------------------------------------------------------
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(stage.clientWidth * dpr)), h = Math.max(1, Math.round(stage.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    if (st.fitted) fit(); else draw();
  }
  let drawQueued = false;
  function draw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => { drawQueued = false; drawNow(); });
  }
  function drawNow() {
    const t0 = performance.now();
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    emptyEl.hidden = !!st.img;
    if (!st.img) { finishPaint(t0); return; }
    const {W, H} = st.img;
    ctx.setTransform(dpr * st.k, 0, 0, dpr * st.k, dpr * st.ox, dpr * st.oy);
    ctx.imageSmoothingEnabled = st.k < st.img.vw / W * 2;
    ctx.drawImage(st.img.bitmap, 0, 0, W, H);
    if (st.crop && st.crop.key === st.img.key && st.k > st.img.vw / W * 1.05) {
      ctx.drawImage(st.crop.bitmap, st.crop.x, st.crop.y, st.crop.w, st.crop.h);
    }
    ctx.imageSmoothingEnabled = false;
    if (st.fill && !st.hideAll && !overlayEmpty()) {
      ctx.globalAlpha = st.opacity;
      ctx.drawImage(st.fill, 0, 0, W, H);
      ctx.globalAlpha = 1;
      // outlines, or just the selected and hovered masks'; below 100% a 1-pixel edge would fall
      // between the screen pixels sampled, so it is drawn again half a screen pixel over
      const d = st.k < 1 ? 0.5 / st.k : 0;
      ctx.drawImage(st.edge, 0, 0, W, H);
      if (d) { ctx.drawImage(st.edge, d, 0, W, H); ctx.drawImage(st.edge, 0, d, W, H); ctx.drawImage(st.edge, -d, 0, W, H); ctx.drawImage(st.edge, 0, -d, W, H); }
    }
    if (st.promptMask) {
      const m = st.prompt.mask, sx = W / (m.fw || st.img.vw), sy = H / (m.fh || st.img.vh);
      ctx.globalAlpha = Math.max(st.opacity, 0.45);
      ctx.drawImage(st.promptMask, m.x * sx, m.y * sy, m.w * sx, m.h * sy);
      ctx.globalAlpha = 1;
    }
    // markers in screen pixels
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const box = st.prompt.box;
    if (box) strokeBox(toScreen(box[0], box[1]), toScreen(box[2], box[3]), "#ffeb3b");
    if (st.press && st.press.box) strokeBox(st.press.start, st.pointer, "#ffeb3b", [5, 4]);
    const corner = st.prompt.corner;
    if (corner) {
      const [cx, cy] = toScreen(corner[0], corner[1]);
      ctx.strokeStyle = "#ffeb3b"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(cx - 8, cy); ctx.lineTo(cx + 8, cy); ctx.moveTo(cx, cy - 8); ctx.lineTo(cx, cy + 8); ctx.stroke();
    }
    for (const [x, y, positive] of st.prompt.points) {
      const [sx, sy] = toScreen(x, y);
      ctx.beginPath(); ctx.arc(sx, sy, 7, 0, 2 * Math.PI);
      ctx.fillStyle = "#fff"; ctx.fill();
      ctx.beginPath(); ctx.arc(sx, sy, 5, 0, 2 * Math.PI);
      ctx.fillStyle = positive ? "#2ecc40" : "#e74c3c"; ctx.fill();
      if (!positive) { ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.beginPath(); ctx.moveTo(sx - 3, sy); ctx.lineTo(sx + 3, sy); ctx.stroke(); }
    }
    if (st.stroke && st.stroke.points.length) {
      ctx.strokeStyle = st.stroke.erase ? "rgba(255,255,255,0.8)" : hexA(selectedColor(), 0.8);
      ctx.lineWidth = 2 * st.stroke.radius * st.k; ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.beginPath();
      st.stroke.points.forEach(([x, y], i) => { const [sx, sy] = toScreen(x, y); if (i) ctx.lineTo(sx, sy); else ctx.moveTo(sx, sy); });
      if (st.stroke.points.length === 1) { const [sx, sy] = toScreen(...st.stroke.points[0]); ctx.lineTo(sx + 0.01, sy); }
      ctx.stroke();
    }
    if ((st.tool === "brush" || st.tool === "erase") && st.pointer) {
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 1; ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.arc(st.pointer[0], st.pointer[1], st.brush, 0, 2 * Math.PI); ctx.stroke(); ctx.setLineDash([]);
    }
    finishPaint(t0);
  }
  function finishPaint(t0) {
    root.dataset.drawn = String(performance.now() - t0);
    root.dataset.paints = String(Number(root.dataset.paints || 0) + 1);
  }
  function strokeBox(a, b, color, dash) {
    ctx.setLineDash(dash || []);
    ctx.lineWidth = 4; ctx.strokeStyle = "rgba(0,0,0,0.7)";
    ctx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
    ctx.lineWidth = 2; ctx.strokeStyle = color;
    ctx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
    ctx.setLineDash([]);
  }
  function hexRGB(hex) { return [parseInt(hex.slice(1, 3), 16), parseInt(hex.slice(3, 5), 16), parseInt(hex.slice(5, 7), 16)]; }
  function hexA(hex, a) { const [r, g, b] = hexRGB(hex); return `rgba(${r},${g},${b},${a})`; }
  function selectedIds() { return [...st.rows.values()].filter(r => r.selected).map(r => r.id); }
  function selectedColor() { const id = selectedIds()[0]; return id ? st.rows.get(id).color : "#ffffff"; }

  // -- mask colours: recomputed only where something changed ------------------------------------
  function shown(row) {
    return row && row.visible && row.review !== "rejected" && (!st.onlySelected || row.selected);
  }
  function rowRect(row) {  // view pixels around a mask's bbox
    const {W, H, vw, vh} = st.img;
    const [x, y, w, h] = row.bbox;
    return [Math.max(0, Math.floor(x * vw / W) - 2), Math.max(0, Math.floor(y * vh / H) - 2),
            Math.min(vw, Math.ceil((x + w) * vw / W) + 2), Math.min(vh, Math.ceil((y + h) * vh / H) + 2)];
  }
  // nothing to overlay (no mask yet, no preview, no coverage): no pixel loop, no layer drawing
  function overlayEmpty() { return !st.layers.length && !st.preview && !st.coverage; }
  function recolor(rect) {
    if (!st.img || !st.fill) return;
    const {vw, vh} = st.img;
    const [x0, y0, x1, y1] = rect || [0, 0, vw, vh];
    // the edge test reads one pixel around, so the top ids are refreshed one pixel wider
    const ax0 = Math.max(0, x0 - 1), ay0 = Math.max(0, y0 - 1), ax1 = Math.min(vw, x1 + 1), ay1 = Math.min(vh, y1 + 1);
    const top = st.top, layers = st.layers, n = layers.length, preview = st.preview;
    if (overlayEmpty()) {
      for (let y = ay0; y < ay1; y++) top.fill(0, y * vw + ax0, y * vw + ax1);
      if (x1 > x0 && y1 > y0) { st.fillCtx.clearRect(x0, y0, x1 - x0, y1 - y0); st.edgeCtx.clearRect(x0, y0, x1 - x0, y1 - y0); }
      return;
    }
    const visible = new Map(), accepted = new Set();
    for (const [id, row] of st.rows) { visible.set(id, shown(row)); if (row.review === "accepted") accepted.add(id); }
    for (let y = ay0; y < ay1; y++) {
      for (let i = y * vw + ax0, end = y * vw + ax1; i < end; i++) {
        let id = 0;
        const p = preview ? preview[i] : 0;
        if (p && visible.get(p)) id = p;
        else for (let l = n - 1; l >= 0; l--) { const v = layers[l][i]; if (v && visible.get(v)) { id = v; break; } }
        top[i] = id;
      }
    }
    const w = x1 - x0, h = y1 - y0;
    if (w <= 0 || h <= 0) return;
    const fill = st.fillCtx.createImageData(w, h), edge = st.edgeCtx.createImageData(w, h);
    const fd = fill.data, ed = edge.data;
    if (st.coverage) {  // magenta where no accepted mask is: what is left to annotate
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          const i = y * vw + x;
          let covered = false;
          for (let l = 0; l < n && !covered; l++) covered = accepted.has(layers[l][i]);
          if (!covered) { const o = ((y - y0) * w + (x - x0)) * 4; fd[o] = 255; fd[o + 1] = 0; fd[o + 2] = 255; fd[o + 3] = 255; }
        }
      }
    } else {
      const colors = new Map();
      for (const [id, row] of st.rows) {
        let [r, g, b] = hexRGB(row.color);
        const hov = id === st.hover;
        if (hov) { r = (r + 255) >> 1; g = (g + 255) >> 1; b = (b + 255) >> 1; }
        colors.set(id, [r, g, b, row.selected || row.current || hov]);
      }
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          const i = y * vw + x, id = top[i];
          if (!id) continue;
          const c = colors.get(id);
          if (!c) continue;
          const o = ((y - y0) * w + (x - x0)) * 4;
          fd[o] = c[0]; fd[o + 1] = c[1]; fd[o + 2] = c[2]; fd[o + 3] = 255;
          const isEdge = (x === 0 || top[i - 1] !== id) || (x === vw - 1 || top[i + 1] !== id) ||
                         (y === 0 || top[i - vw] !== id) || (y === vh - 1 || top[i + vw] !== id);
          if (isEdge && (st.outlines || c[3])) {
            const white = c[3];
            ed[o] = white ? 255 : c[0]; ed[o + 1] = white ? 255 : c[1]; ed[o + 2] = white ? 255 : c[2]; ed[o + 3] = 255;
          }
        }
      }
    }
    st.fillCtx.putImageData(fill, x0, y0);
    st.edgeCtx.putImageData(edge, x0, y0);
  }
  function recolorAll() { recolor(null); draw(); }
  function recolorRows(ids) {
    if (st.coverage) { draw(); return; }
    for (const id of ids) { const row = st.rows.get(id); if (row && st.img) recolor(rowRect(row)); }
    draw();
  }

  // -- frames from the server ---------------------------------------------------------------------
  async function bitmapOf(src) {
    const blob = await (await fetch(src)).blob();
    return createImageBitmap(blob, {colorSpaceConversion: "none", premultiplyAlpha: "none"});
  }
  const scratch = document.createElement("canvas");
  const scratchCtx = scratch.getContext("2d", {willReadFrequently: true});
  function pixelsOf(bitmap) {
    scratch.width = bitmap.width; scratch.height = bitmap.height;
    scratchCtx.clearRect(0, 0, scratch.width, scratch.height);
    scratchCtx.drawImage(bitmap, 0, 0);
    return scratchCtx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  }
  function newLayerCanvases(vw, vh) {
    st.fill = document.createElement("canvas"); st.fill.width = vw; st.fill.height = vh;
    st.fillCtx = st.fill.getContext("2d");
    st.edge = document.createElement("canvas"); st.edge.width = vw; st.edge.height = vh;
    st.edgeCtx = st.edge.getContext("2d");
    st.top = new Uint32Array(vw * vh);
  }
  // the candidate comes tinted and transparent around it (a paletted PNG): drawn as it is
  async function promptCanvas(m) {
    const blob = await (await fetch(m.src)).blob();
    return createImageBitmap(blob);
  }
  async function applyFrame(f) {
    if (!f || f.kind !== "frame") return;
    // decode what the frame brings first (in parallel), then change the state in one go
    const imageBitmap = f.image ? bitmapOf(f.image.src) : null;
    const patchBitmaps = f.layers ? Promise.all(f.layers.patches.map(p => bitmapOf(p.src))) : null;
    const previewBitmap = f.preview ? bitmapOf(f.preview.src) : null;
    const promptMask = f.prompt && f.prompt.mask ? promptCanvas(f.prompt.mask) : null;
    if ("image" in f) {
      if (f.image === null) {
        st.img = null; st.layers = []; st.fill = null; st.crop = null; st.rows = new Map();
        st.prompt = {points: [], box: null, corner: null, mask: null, color: "#1e90ff"}; st.promptMask = null;
        st.legend = []; renderLegend(); viewChanged();
      } else {
        st.img = {key: f.image.key, W: f.image.width, H: f.image.height, vw: f.image.view_width,
                  vh: f.image.view_height, bitmap: await imageBitmap};
        st.crop = null; st.layers = []; st.preview = null; st.hover = 0; st.rows = new Map();
        newLayerCanvases(st.img.vw, st.img.vh);
        fit();
      }
    }
    if (f.view) applyView(f.view);
    const dirty = [];
    if (f.table) {
      const old = st.rows;
      st.rows = new Map(f.table.map(r => [r.id, r]));
      // rows whose look changed are recoloured where they are
      for (const [id, r] of st.rows) {
        const o = old.get(id);
        if (!o || o.color !== r.color || o.visible !== r.visible || o.selected !== r.selected || o.current !== r.current || o.review !== r.review) dirty.push(r);
      }
      for (const [id, o] of old) if (!st.rows.has(id)) dirty.push(o);
    }
    let full = !!f.view;
    if (f.layers && st.img) {
      const L = f.layers, {vw, vh} = st.img;
      if (L.reset) { st.layers = []; full = true; }
      const count = Math.max(L.count, ...L.patches.map(p => p.layer + 1));
      while (st.layers.length < count) st.layers.push(new Uint32Array(vw * vh));
      const bitmaps = await patchBitmaps;
      L.patches.forEach((p, j) => {
        const px = pixelsOf(bitmaps[j]), lay = st.layers[p.layer];
        for (let y = 0; y < p.h; y++) {
          let o = y * p.w * 4, i = (p.y + y) * vw + p.x;
          for (let x = 0; x < p.w; x++, o += 4, i++) lay[i] = px[o] | (px[o + 1] << 8) | (px[o + 2] << 16);
        }
        if (!full && !st.coverage) recolor([p.x, p.y, p.x + p.w, p.y + p.h]);
      });
      st.layers.length = L.count;
      if (st.coverage) full = true;
    }
    if ("preview" in f && st.img) {
      st.preview = null;
      if (f.preview) {
        const px = pixelsOf(await previewBitmap), ids = new Uint32Array(f.preview.w * f.preview.h);
        for (let i = 0, o = 0; i < ids.length; i++, o += 4) ids[i] = px[o] | (px[o + 1] << 8) | (px[o + 2] << 16);
        st.preview = ids;
      }
      full = true;
    }
    if (st.img && st.fill) {
      if (full || (st.coverage && dirty.length)) recolor(null);
      else for (const r of dirty) recolor(rowRect(r));
    }
    if (f.prompt) {
      st.prompt = f.prompt;
      st.promptMask = promptMask && st.img ? await promptMask : null;
      schedulePromptScale();  // zoomed in since it was asked for
    }
    if (f.classes) st.classes = f.classes;
    if (f.legend) { st.legend = f.legend; renderLegend(); }
    st.frame = f.frame;
    st.pending = st.pending.filter(a => a.seq > f.ack);
    // the server's mode (accept returns to + Point): shown unless a mode change is still on its way
    if (f.mode && f.mode !== st.mode && !st.pending.some(a => a.type === "mode")) {
      st.mode = f.mode;
      if (MODES.includes(st.tool)) setTool(f.mode, false);
    }
    draw();
    await new Promise(r => requestAnimationFrame(() => r()));
    mark("drawn", f.frame, f.ack);
    root.dataset.frame = String(f.frame);
    root.dataset.ack = String(f.ack);
  }
  function currentLabel() {
    const el = document.querySelector("#label input, #label textarea");
    return el ? el.value.trim() : null;
  }
  function renderLegend() {
    legendEl.textContent = "";
    const label = currentLabel();
    for (const c of st.legend) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "acv-class" + (c.id !== null && c.name === label ? " on" : "");
      b.dataset.classId = c.id === null ? "" : String(c.id);
      b.title = c.id === null ? "masks without a class" : `label the next mask ${c.name}` + (c.shortcut ? ` (${c.shortcut})` : "");
      const sw = document.createElement("span"); sw.className = "acv-swatch"; sw.style.background = c.color || "transparent";
      const name = document.createElement("span"); name.textContent = (c.shortcut ? c.shortcut + " " : "") + c.name;
      const n = document.createElement("span"); n.className = "acv-count"; n.textContent = String(c.count);
      b.append(sw, name, n);
      if (c.id !== null) b.addEventListener("click", () => setClass(c.id));
      legendEl.append(b);
    }
  }
  // the class of the next mask is the page's label (#label): accept sends it, a new name adds a class
  function setClass(id) {
    const c = st.classes.find(c => c.id === id);
    if (!c) return;
    const el = document.querySelector("#label input, #label textarea");
    if (el) { el.value = c.name; el.dispatchEvent(new Event("input", {bubbles: true})); }
    renderLegend();
    statusEl.textContent = "class: " + c.name;
  }
  // Frames are deltas, applied in their order; events finishing out of order can deliver
  // them out of order, so later ones wait for the gap to fill (or ask for everything again).
  const held = new Map();
  let resyncTimer = null;
  function onValue() { onFrame(props.value); }
  function onFrame(f) {
    if (!f || f.kind !== "frame") return;
    if (f.channel) st.channel = f.channel;
    mark("frame", f.frame);
    if (f.full) { for (const n of [...held.keys()]) if (n <= f.frame) held.delete(n); enqueue(f); }
    else if (f.frame > st.queued + 1) {
      held.set(f.frame, f);
      clearTimeout(resyncTimer);
      resyncTimer = setTimeout(() => { if (held.size) { held.clear(); send({type: "resync"}); } }, 1500);
      return;
    } else if (f.frame <= st.queued) return;  // already applied
    else enqueue(f);
    while (held.has(st.queued + 1)) { const g = held.get(st.queued + 1); held.delete(st.queued + 1); enqueue(g); }
    if (!held.size) clearTimeout(resyncTimer);
  }
  function enqueue(f) {
    st.queued = f.frame;
    st.chain = st.chain.then(() => applyFrame(f)).catch(err => { console.error("canvas frame", err); statusEl.textContent = "could not draw: " + err; });
  }

  // -- actions to the server ------------------------------------------------------------------------
  function currentView() {
    return {alpha: st.opacity, outlines: st.outlines, only_selected: st.onlySelected, coverage: st.coverage};
  }
  function message() {
    return {kind: "actions", have: {image: st.img ? st.img.key : null, frame: st.frame}, view: currentView(),
            scale: screenScale(), actions: st.pending.slice()};
  }
  function viaEvent() { props.value = message(); trigger("input"); }
  function send(action) {
    action.seq = ++st.seq;
    mark("send", action.seq);
    st.pending.push(action);
    flush();
  }
  // one direct call at a time: actions made meanwhile ride in the next one
  async function flush() {
    if (!st.channel || !server || !server.canvas_actions) { viaEvent(); return; }
    if (st.direct) { st.again = true; return; }
    st.direct = true;
    let f = null;
    try {
      f = await server.canvas_actions({...message(), channel: st.channel, label: currentLabel()});
    } catch (err) {
      console.error("canvas actions", err);
    }
    const ok = !!(f && f.kind === "frame");
    if (ok) {
      onFrame(f);
      await st.chain;  // drawn first: the page catching up must not hold the mask back
    }
    st.direct = false;
    if (!ok) {
      st.again = false;
      st.channel = null;  // not known there any more (the session was freed): events until a frame says
      viaEvent();
    } else if (st.again) { st.again = false; flush(); }
    else viaEvent();  // the page catches up (message, candidates, table); acknowledged actions are skipped
  }

  // -- full-resolution crop when zoomed past the view scale ----------------------------------------
  function scheduleCrop() {
    clearTimeout(st.cropTimer);
    if (!st.img || st.img.vw >= st.img.W || st.k <= st.img.vw / st.img.W * 1.05) return;
    st.cropTimer = setTimeout(fetchCrop, 120);
  }
  async function fetchCrop() {
    if (!st.img || !server || !server.crop_image) return;
    const [x0, y0] = toImage(0, 0), [x1, y1] = toImage(canvas.clientWidth, canvas.clientHeight);
    const mx = (x1 - x0) * 0.25, my = (y1 - y0) * 0.25, {W, H, key} = st.img;
    const want = [Math.max(0, x0 - mx), Math.max(0, y0 - my), Math.min(W, x1 + mx), Math.min(H, y1 + my)];
    const c = st.crop;
    if (c && c.key === key && c.x <= Math.max(0, x0) && c.y <= Math.max(0, y0) && c.x + c.w >= Math.min(W, x1) &&
        c.y + c.h >= Math.min(H, y1) && c.scale >= Math.min(1, st.k)) return;
    const mine = ++st.cropSeq;
    try {
      const r = await server.crop_image(key, want[0], want[1], want[2], want[3], Math.min(1, st.k * (window.devicePixelRatio || 1)));
      if (!r || mine !== st.cropSeq || !st.img || st.img.key !== key) return;
      st.crop = {key, x: r.x, y: r.y, w: r.w, h: r.h, scale: Math.min(1, st.k), bitmap: await bitmapOf(r.src)};
      root.dataset.crop = [r.x, r.y, r.w, r.h].join(",");
      draw();
    } catch (err) { console.error("canvas crop", err); }
  }

  // -- pointer ----------------------------------------------------------------------------------------
  function hoverAt(cx, cy) {
    if (!st.img || !st.top) return;
    const [x, y] = toImage(cx, cy);
    let id = 0;
    if (inImage(x, y) && !st.hideAll) {
      const vx = Math.floor(x * st.img.vw / st.img.W), vy = Math.floor(y * st.img.vh / st.img.H);
      id = st.top[vy * st.img.vw + vx] || 0;
    }
    if (id !== st.hover) {
      const old = st.hover;
      st.hover = id;
      root.dataset.hover = String(id);
      recolorRows([old, id].filter(Boolean));
      const row = st.rows.get(id);
      statusEl.textContent = row ? `mask ${id}${row.label ? " · " + row.label : ""} · ${row.area} px` : "";
    }
  }
  function nearPoint(cx, cy) {
    const pts = st.prompt.points;
    for (let i = pts.length - 1; i >= 0; i--) {
      const [sx, sy] = toScreen(pts[i][0], pts[i][1]);
      if (Math.hypot(sx - cx, sy - cy) <= POINT_HIT_PX) return i;
    }
    return -1;
  }
  const prompting = () => st.tool === "positive" || st.tool === "negative" || st.tool === "box";
  canvas.addEventListener("contextmenu", e => e.preventDefault());
  canvas.addEventListener("pointerdown", e => {
    root.focus({preventScroll: true});
    if (!st.img) return;
    const p = local(e);
    canvas.setPointerCapture(e.pointerId);
    if (e.button === 1 || (e.button === 0 && st.spaceDown)) {
      e.preventDefault();
      st.press = {pan: true, start: p, ox: st.ox, oy: st.oy};
      canvas.style.cursor = "grabbing";
      return;
    }
    if (e.button === 0 && (st.tool === "brush" || st.tool === "erase")) {
      const target = selectedIds();
      if (target.length !== 1) { statusEl.textContent = "select one mask to paint on (S, then click it)"; return; }
      st.stroke = {id: target[0], erase: st.tool === "erase", radius: st.brush / st.k, points: [toImage(...p)]};
      draw();
      return;
    }
    st.press = {button: e.button, start: p, alt: e.altKey, shift: e.shiftKey, box: false};
  });
  canvas.addEventListener("pointermove", e => {
    const p = local(e);
    st.pointer = p;
    if (st.press && st.press.pan) {
      st.ox = st.press.ox + p[0] - st.press.start[0]; st.oy = st.press.oy + p[1] - st.press.start[1];
      st.fitted = false; viewChanged(); return;
    }
    if (st.stroke) {
      const q = toImage(...p), last = st.stroke.points[st.stroke.points.length - 1];
      if (Math.hypot(q[0] - last[0], q[1] - last[1]) * st.k >= 2) st.stroke.points.push(q);
      draw(); return;
    }
    if (st.press && st.press.button === 0 && prompting() && !st.press.alt &&
        Math.hypot(p[0] - st.press.start[0], p[1] - st.press.start[1]) > DRAG_PX) st.press.box = true;
    if (st.press && st.press.box) { draw(); return; }
    hoverAt(...p);
    if (st.tool === "brush" || st.tool === "erase") draw();
  });
  canvas.addEventListener("pointerleave", () => { st.pointer = null; if (!st.press && st.hover) hoverAt(-1e9, -1e9); draw(); });
  canvas.addEventListener("pointerup", e => {
    const p = local(e);
    if (st.stroke) {
      const s = st.stroke; st.stroke = null;
      send({type: "paint", id: s.id, strokes: [{points: s.points, radius: s.radius, erase: s.erase}]});
      draw(); return;
    }
    const press = st.press; st.press = null;
    if (!press) return;
    if (press.pan) { canvas.style.cursor = ""; return; }
    const [x, y] = toImage(...p);
    if (press.box) {
      const [x0, y0] = toImage(...press.start);
      const clamp = (v, m) => Math.max(0, Math.min(m, v));
      const box = [clamp(x0, st.img.W), clamp(y0, st.img.H), clamp(x, st.img.W), clamp(y, st.img.H)];
      send({type: "box", box});
      st.prompt = {...st.prompt, corner: null, box: [Math.min(box[0], box[2]), Math.min(box[1], box[3]), Math.max(box[0], box[2]), Math.max(box[1], box[3])]};
      draw(); return;
    }
    if (!inImage(x, y)) return;
    if (st.tool === "select") { send({type: "select", x, y}); return; }
    if (!prompting()) return;
    const hit = nearPoint(...p);
    if (hit >= 0 && press.button === 0 && !press.alt) {
      send({type: "remove_point", index: hit});
      st.prompt = {...st.prompt, points: st.prompt.points.filter((_, i) => i !== hit)};
    } else if (press.button === 0 || press.button === 2) {
      const mode = press.button === 0 && !press.alt ? st.tool : OPPOSITE[st.tool];
      send({type: "point", x, y, mode});
      if (mode === "box") st.prompt = {...st.prompt, corner: st.prompt.corner ? null : [x, y]};  // shown at once
      else st.prompt = {...st.prompt, points: [...st.prompt.points, [x, y, mode === "positive" ? 1 : 0]]};
    }
    draw();
  });
  canvas.addEventListener("wheel", e => {
    if (!st.img) return;
    e.preventDefault();
    const p = local(e);
    const dy = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
    zoomAt(p[0], p[1], st.k * Math.exp(-dy * 0.0015));
  }, {passive: false});

  // -- toolbar -------------------------------------------------------------------------------------------
  // tell: a mode the user chose goes to the server (clicks and accept follow it there too)
  function setTool(tool, tell = true) {
    st.tool = tool;
    root.dataset.tool = tool;
    root.querySelectorAll(".acv-tool").forEach(b => { b.classList.toggle("on", b.dataset.tool === tool); b.setAttribute("aria-pressed", String(b.dataset.tool === tool)); });
    canvas.style.cursor = tool === "select" ? "pointer" : (tool === "brush" || tool === "erase") ? "none" : "crosshair";
    if (tell && MODES.includes(tool) && tool !== st.mode) { st.mode = tool; send({type: "mode", mode: tool}); }
    draw();
  }
  function applyView(v) {
    st.opacity = v.alpha; st.outlines = !!v.outlines; st.onlySelected = !!v.only_selected; st.coverage = !!v.coverage;
    opacityEl.value = String(Math.round(v.alpha * 100));
    outlinesEl.checked = st.outlines; onlyEl.checked = st.onlySelected; coverageEl.checked = st.coverage;
  }
  root.querySelectorAll(".acv-tool").forEach(b => b.addEventListener("click", () => setTool(b.dataset.tool)));
  root.querySelector('[data-view="fit"]').addEventListener("click", fit);
  root.querySelector('[data-view="actual"]').addEventListener("click", () => zoomAt(canvas.clientWidth / 2, canvas.clientHeight / 2, 1 / (window.devicePixelRatio || 1)));
  function toggleHelp() { helpEl.hidden = !helpEl.hidden; }
  root.querySelector(".acv-help-btn").addEventListener("click", toggleHelp);
  root.querySelector(".acv-help-close").addEventListener("click", () => { helpEl.hidden = true; root.focus(); });
  opacityEl.addEventListener("input", () => { st.opacity = opacityEl.value / 100; draw(); });
  hideEl.addEventListener("change", () => { st.hideAll = hideEl.checked; if (st.hideAll) st.hover = 0; draw(); });
  onlyEl.addEventListener("change", () => { st.onlySelected = onlyEl.checked; recolorAll(); });
  // outlines and coverage are kept by the server at once (a project reopens with them)
  outlinesEl.addEventListener("change", () => { st.outlines = outlinesEl.checked; recolorAll(); send({type: "view", view: currentView()}); });
  coverageEl.addEventListener("change", () => { st.coverage = coverageEl.checked; recolorAll(); send({type: "view", view: currentView()}); });
  function toggle(el) { return () => { el.checked = !el.checked; el.dispatchEvent(new Event("change")); }; }
  function brushBy(f) {
    st.brush = Math.max(1, Math.min(400, st.brush * f));
    statusEl.textContent = "brush " + Math.round(st.brush) + " px"; draw();
  }

  // -- keys: anywhere on the page but in a text field (see the header) --------------------------------
  const KEYS = {
    "p": () => setTool("positive"),
    "n": () => setTool("negative"),
    "b": () => setTool("box"),
    "s": () => setTool("select"),
    "r": () => setTool("brush"),
    "e": () => setTool("erase"),
    "+": () => zoomBy(1.25),
    "=": () => zoomBy(1.25),
    "-": () => zoomBy(1 / 1.25),
    "0": fit,
    "[": () => brushBy(1 / 1.25),
    "]": () => brushBy(1.25),
    "v": toggle(hideEl),
    "o": toggle(onlyEl),
    "l": toggle(outlinesEl),
    "c": toggle(coverageEl),
    "?": toggleHelp,
  };
  let over = false;
  root.addEventListener("pointerenter", () => { over = true; });
  root.addEventListener("pointerleave", () => { over = false; });
  document.addEventListener("keyup", e => { if (e.key === " ") { st.spaceDown = false; if (!st.press) canvas.style.cursor = ""; } });
  document.addEventListener("keydown", e => {
    const t = e.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && !["range", "checkbox", "radio", "button"].includes(t.type)) || t.isContentEditable)) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const here = over || root.contains(document.activeElement);
    let done = true;
    if (key === "Escape" && !helpEl.hidden) helpEl.hidden = true;  // (else the page's Esc clears the prompt)
    else if (KEYS[key]) KEYS[key]();
    else if (/^[1-9]$/.test(key)) { const c = st.classes.find(c => c.shortcut === Number(key)); if (c) setClass(c.id); else done = false; }
    else if (key === " " && here) { st.spaceDown = true; canvas.style.cursor = "grab"; }
    else if (key === "Tab" && here && st.prompt.mask) send({type: "candidate", position: -1});
    else done = false;
    if (done) { e.preventDefault(); e.stopPropagation(); }
  }, true);
  document.addEventListener("input", e => { if (e.target && e.target.closest && e.target.closest("#label")) renderLegend(); });

  // -- start -----------------------------------------------------------------------------------------------
  root._acv = {state: st, timings, toScreen, toImage, fit, zoomAt, recolorAll, setTool, send};  // for tests and benchmarks
  new ResizeObserver(resize).observe(stage);
  setTool("positive", false);
  watch("value", onValue);
  resize();
  onValue();
})();
