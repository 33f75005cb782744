"use strict";
// The option controls (templates/_options.html): filled from a preset or a job's options,
// read back as the API's fields (web/forms.py FIELDS plus `preset`).
class OptionControls {
  constructor(root, onChange = () => {}) {
    this.root = root;
    this.presets = JSON.parse(root.dataset.presets);
    this.defaults = JSON.parse(root.dataset.defaults);
    root.addEventListener("input", (event) => {
      if (event.target.name === "preset") this.fill(this.preset(event.target.value), event.target.value);
      this.sync();
      onChange(this.values());
    });
    this.fill(this.defaults);
  }

  field(name) { return this.root.querySelector(`[name="${name}"]`); }

  preset(name) { return { ...this.defaults, ...(this.presets[name] || {}) }; }

  fill(values, preset = "") {
    const all = { ...this.defaults, ...values };
    this.field("preset").value = preset;
    const format = this.root.querySelector(`[name="format"][value="${all.format}"]`);
    if (format) format.checked = true;
    const colour = all.bg_color ? hexColour(all.bg_color) : null;
    this.field("transparent").checked = !colour || colour.alpha === 0;
    if (colour && colour.alpha) this.field("bg_color").value = colour.hex;
    for (const name of ["alpha_threshold", "erode_kernel", "feather_radius"]) this.field(name).value = all[name];
    for (const name of ["feather_edge", "refine", "despill", "mask", "crop"]) this.field(name).checked = !!all[name];
    this.sync();
  }

  sync() {
    const jpg = this.format() === "jpg";
    const transparent = this.field("transparent");
    if (jpg) transparent.checked = false;  // jpg has no alpha channel: it always sits on a colour
    transparent.disabled = jpg;
    this.root.querySelector("[data-jpg-hint]").hidden = !jpg;
    this.field("bg_color").disabled = transparent.checked;
    this.field("feather_radius").disabled = !this.field("feather_edge").checked;
    for (const out of this.root.querySelectorAll("output[data-for]")) {
      out.value = this.field(out.dataset.for).value + (out.dataset.unit || "");
    }
  }

  format() { return (this.root.querySelector('[name="format"]:checked') || {}).value || "png"; }

  values() {
    const preset = this.field("preset").value;
    let bg = this.field("bg_color").value;
    // Explicit options win over the preset's, so a transparent choice must override its colour.
    if (this.field("transparent").checked) bg = (this.presets[preset] || {}).bg_color ? "#00000000" : null;
    const values = { preset: preset || null, format: this.format(), bg_color: bg };
    for (const name of ["alpha_threshold", "erode_kernel", "feather_radius"]) values[name] = +this.field(name).value;
    for (const name of ["feather_edge", "refine", "despill", "mask", "crop"]) values[name] = this.field(name).checked;
    return values;
  }

  appendTo(form) {
    for (const [name, value] of Object.entries(this.values())) if (value !== null) form.append(name, String(value));
    return form;
  }
}

// Any CSS colour -> {hex: "#rrggbb", alpha: 0-1}, through a canvas that normalises it.
function hexColour(text) {
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillStyle = text.startsWith("#") || !/^[0-9a-f]{3,8}$/i.test(text) ? text : `#${text}`;
  const value = ctx.fillStyle;
  if (value.startsWith("#")) return { hex: value, alpha: 1 };
  const [r, g, b, a] = value.match(/[\d.]+/g).map(Number);
  return { hex: "#" + [r, g, b].map((c) => c.toString(16).padStart(2, "0")).join(""), alpha: a };
}
