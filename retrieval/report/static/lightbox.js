// A click on any link marked data-lightbox opens its image large in the page, with the
// object's box (data-box: [x1, y1, x2, y2] in image pixels) and mask (data-mask: COCO RLE
// JSON) drawn over it. The original image is shown when the browser can read it from disk;
// otherwise the thumbnail (data-thumb), which has the overlay drawn in already.
// Keys: Escape closes, arrows step through the links of the same query, O hides the overlay.
(function () {
  "use strict";
  var YELLOW = [255, 212, 0];
  var box, img, canvas, caption, current = null, group = [], overlayOn = true;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // COCO RLE counts: a list, or the compressed string form (6-bit characters, 5 data bits
  // each, runs after the second stored as differences to the run two before).
  function counts(rle) {
    if (Array.isArray(rle.counts)) return rle.counts;
    var text = rle.counts, out = [], p = 0;
    while (p < text.length) {
      var x = 0, k = 0, more = true;
      while (more) {
        var c = text.charCodeAt(p++) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = (c & 0x20) !== 0;
        k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (out.length > 2) x += out[out.length - 2];
      out.push(x);
    }
    return out;
  }

  // Column-major 0/1 pixels of an RLE mask of size [h, w].
  function decode(rle) {
    var h = rle.size[0], w = rle.size[1], pixels = new Uint8Array(h * w), at = 0, value = 0;
    counts(rle).forEach(function (run) {
      if (value) pixels.fill(1, at, Math.min(at + run, pixels.length));
      at += run;
      value = 1 - value;
    });
    return { h: h, w: w, pixels: pixels };
  }

  function build() {
    box = el("div", "lightbox");
    box.hidden = true;
    box.setAttribute("role", "dialog");
    var stage = el("div", "lightbox-stage");
    img = el("img");
    canvas = el("canvas");
    stage.appendChild(img);
    stage.appendChild(canvas);
    var bar = el("div", "lightbox-bar");
    caption = el("div", "lightbox-caption");
    var controls = el("div", "lightbox-controls");
    [["\u2039", function () { step(-1); }, "previous (\u2190)"],
     ["\u203a", function () { step(1); }, "next (\u2192)"],
     ["outline", function () { overlayOn = !overlayOn; draw(); }, "show / hide box and mask (O)"],
     ["\u2715", close, "close (Esc)"]].forEach(function (b) {
      var button = el("button", "", b[0]);
      button.title = b[2];
      button.onclick = function (event) { event.stopPropagation(); b[1](); };
      controls.appendChild(button);
    });
    bar.appendChild(caption);
    bar.appendChild(controls);
    box.appendChild(stage);
    box.appendChild(bar);
    box.onclick = function (event) { if (event.target === box || event.target === stage) close(); };
    img.onload = draw;
    img.onerror = function () {
      if (current && img.dataset.fallback !== "1" && current.dataset.thumb) {
        img.dataset.fallback = "1";  // the original is not readable here: its thumbnail, overlay drawn in
        img.src = current.dataset.thumb;
      }
    };
    document.body.appendChild(box);
    window.addEventListener("resize", draw);
  }

  function open(link) {
    if (!box) build();
    current = link;
    var scope = link.closest("[data-lightbox-group]") || document;
    group = Array.from(scope.querySelectorAll("a[data-lightbox]"));
    caption.textContent = link.dataset.caption || link.title || "";
    box.hidden = false;
    img.dataset.fallback = "0";
    img.style.width = img.style.height = "";
    clear();
    img.src = link.href;
  }

  function close() { if (box) { box.hidden = true; current = null; } }

  function step(delta) {
    if (!current || group.length < 2) return;
    var i = (group.indexOf(current) + delta + group.length) % group.length;
    open(group[i]);
  }

  function clear() {
    canvas.width = canvas.height = 0;
    box.dataset.drawn = "";
  }

  function draw() {
    if (!current || box.hidden || !img.naturalWidth) return;
    // as large as the window allows: small images are enlarged too, so a small box can be judged
    var fit = Math.min((window.innerWidth - 60) / img.naturalWidth, (window.innerHeight - 110) / img.naturalHeight);
    img.style.width = Math.max(1, Math.floor(img.naturalWidth * fit)) + "px";
    img.style.height = Math.max(1, Math.floor(img.naturalHeight * fit)) + "px";
    var rect = img.getBoundingClientRect();
    var ratio = window.devicePixelRatio || 1;
    var cw = Math.max(1, Math.round(rect.width * ratio)), ch = Math.max(1, Math.round(rect.height * ratio));
    canvas.width = cw;
    canvas.height = ch;
    var stage = canvas.parentNode.getBoundingClientRect();
    canvas.style.left = rect.left - stage.left + "px";
    canvas.style.top = rect.top - stage.top + "px";
    canvas.style.width = rect.width + "px";
    canvas.style.height = rect.height + "px";
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, cw, ch);
    box.dataset.drawn = "";
    if (!overlayOn || img.dataset.fallback === "1") return;  // a thumbnail has its overlay already
    var sx = cw / img.naturalWidth, sy = ch / img.naturalHeight, drawn = [];
    if (current.dataset.mask) {
      drawMask(ctx, decode(JSON.parse(current.dataset.mask)), cw, ch, Math.max(2, Math.round(2 * ratio)));
      drawn.push("mask");
    }
    if (current.dataset.box) {
      var b = JSON.parse(current.dataset.box), line = Math.max(2, Math.round(2 * ratio));
      var x = b[0] * sx, y = b[1] * sy, w = (b[2] - b[0]) * sx, h = (b[3] - b[1]) * sy;
      ctx.lineWidth = line + 2;
      ctx.strokeStyle = "rgba(0,0,0,.85)";
      ctx.strokeRect(x, y, w, h);
      ctx.lineWidth = line;
      ctx.strokeStyle = "rgb(" + YELLOW.join(",") + ")";
      ctx.strokeRect(x, y, w, h);
      drawn.push("box");
    }
    box.dataset.drawn = drawn.join(" ");
  }

  // The mask sampled at the canvas's resolution: tinted inside, a yellow outline of `width`
  // canvas pixels at its edge, dark just outside it.
  function drawMask(ctx, mask, cw, ch, width) {
    var inside = new Uint8Array(cw * ch), x, y;
    for (x = 0; x < cw; x++) {
      var column = Math.min(mask.w - 1, Math.floor(x * mask.w / cw)) * mask.h;
      for (y = 0; y < ch; y++) inside[y * cw + x] = mask.pixels[column + Math.min(mask.h - 1, Math.floor(y * mask.h / ch))];
    }
    var image = ctx.createImageData(cw, ch), data = image.data;
    function near(px, py, r, want) {
      for (var dy = -r; dy <= r; dy++) {
        for (var dx = -r; dx <= r; dx++) {
          var nx = px + dx, ny = py + dy;
          var v = nx < 0 || ny < 0 || nx >= cw || ny >= ch ? 0 : inside[ny * cw + nx];
          if (v === want) return true;
        }
      }
      return false;
    }
    for (y = 0; y < ch; y++) {
      for (x = 0; x < cw; x++) {
        var i = y * cw + x, o = 4 * i;
        if (inside[i]) {
          var edge = near(x, y, width, 0);
          data[o] = YELLOW[0]; data[o + 1] = YELLOW[1]; data[o + 2] = YELLOW[2];
          data[o + 3] = edge ? 255 : 60;
        } else if (near(x, y, 1, 1)) {
          data[o + 3] = 200;  // black shadow
        }
      }
    }
    ctx.putImageData(image, 0, 0);
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-lightbox]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    open(link);
  });
  document.addEventListener("keydown", function (event) {
    if (!box || box.hidden) return;
    if (event.key === "Escape") close();
    else if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else if (event.key === "o" || event.key === "O") { overlayOn = !overlayOn; draw(); }
  });
})();
