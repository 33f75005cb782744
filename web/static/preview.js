"use strict";
// Live preview of the recompose options on one item, computed in a canvas: its input image and its
// stored 320x320 alpha, upsampled by drawImage (bilinear, like the server), then the server's order
// threshold -> erode -> feather -> background (matting_core/postprocess.py). It runs at most
// MAX_SIDE px so each change takes a few ms; erode and feather radii are scaled to match. Refine,
// despill and crop need the full-resolution pipeline and show only once applied.
class Preview {
  static MAX_SIDE = 480;

  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.source = null;
    this.options = null;
  }

  async load(inputUrl, alphaUrl) {
    const [image, mask] = await Promise.all([loadImage(inputUrl), loadImage(alphaUrl)]);
    const scale = Math.min(1, Preview.MAX_SIDE / Math.max(image.naturalWidth, image.naturalHeight));
    const w = Math.max(1, Math.round(image.naturalWidth * scale));
    const h = Math.max(1, Math.round(image.naturalHeight * scale));
    this.canvas.width = w;
    this.canvas.height = h;
    this.ctx.drawImage(image, 0, 0, w, h);
    const rgb = this.ctx.getImageData(0, 0, w, h).data;
    this.ctx.clearRect(0, 0, w, h);
    this.ctx.drawImage(mask, 0, 0, w, h);
    const grey = this.ctx.getImageData(0, 0, w, h).data;
    const alpha = new Float32Array(w * h);
    for (let p = 0; p < alpha.length; p += 1) alpha[p] = grey[4 * p] / 255;
    this.source = { w, h, rgb, alpha, scale };
    if (this.options) this.render(this.options);
  }

  render(options) {
    this.options = options;
    if (!this.source) return;
    const { w, h, rgb, scale } = this.source;
    let a = this.source.alpha;
    if (options.alpha_threshold > 0) a = a.map((v) => (v * 255 < options.alpha_threshold ? 0 : v));
    const erodeR = Math.round(options.erode_kernel * scale);
    if (erodeR > 0) a = erode(a, w, h, erodeR);
    if (options.feather_edge && options.feather_radius > 0) a = gaussian(a, w, h, (options.feather_radius * scale) / 3);
    const bg = background(options);
    const out = this.ctx.createImageData(w, h);
    const px = out.data;
    for (let p = 0, q = 0; p < a.length; p += 1, q += 4) {
      const v = Math.min(1, Math.max(0, a[p]));
      if (options.mask) {
        px[q] = px[q + 1] = px[q + 2] = Math.round(v * 255);
        px[q + 3] = 255;
      } else if (bg) {
        for (let c = 0; c < 3; c += 1) px[q + c] = Math.round(v * rgb[q + c] + (1 - v) * bg[c]);
        px[q + 3] = 255;
      } else {
        px[q] = rgb[q]; px[q + 1] = rgb[q + 1]; px[q + 2] = rgb[q + 2];
        px[q + 3] = Math.round(v * 255);
      }
    }
    this.ctx.putImageData(out, 0, 0);
    this.canvas.dataset.renders = String(Number(this.canvas.dataset.renders || 0) + 1);  // tests wait on it
  }
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.addEventListener("load", () => resolve(img));
    img.addEventListener("error", () => reject(new Error(`could not load ${url}`)));
    img.src = url;
  });
}

// The opaque colour to compose on, as the server picks it (pipeline.background), or null.
function background(options) {
  const text = options.bg_color;
  if (!text) return options.format === "jpg" ? [255, 255, 255] : null;
  const colour = hexColour(text);
  if (colour.alpha === 0) return null;
  return [1, 3, 5].map((i) => parseInt(colour.hex.slice(i, i + 2), 16));
}

// `combine` over a (2r+1)-pixel window along rows, then along columns, replicating the border as
// the server's cv2 calls do. A square erosion kernel stands in for the server's ellipse: at the
// small radii a preview sees they differ by a pixel at most.
function separable(src, w, h, r, init, combine) {
  const pass = (input, length, lines, step, stride) => {
    const out = new Float32Array(input.length);
    for (let line = 0; line < lines; line += 1) {
      const base = line * stride;
      for (let i = 0; i < length; i += 1) {
        let acc = init;
        for (let k = -r; k <= r; k += 1) {
          acc = combine(acc, input[base + Math.min(length - 1, Math.max(0, i + k)) * step], k);
        }
        out[base + i * step] = acc;
      }
    }
    return out;
  };
  return pass(pass(src, w, h, 1, w), h, w, w, 1);
}

function erode(src, w, h, r) {
  return separable(src, w, h, r, 1, (acc, v) => Math.min(acc, v));
}

function gaussian(src, w, h, sigma) {
  const r = Math.max(1, Math.ceil(3 * sigma));
  const kernel = [];
  for (let k = -r; k <= r; k += 1) kernel.push(Math.exp(-(k * k) / (2 * sigma * sigma)));
  const sum = kernel.reduce((s, v) => s + v, 0);
  return separable(src, w, h, r, 0, (acc, v, k) => acc + (kernel[k + r] / sum) * v);
}
