"use strict";
// The upload page: choose files (drop or pick), set options, POST them to the API, go to the job.
(() => {
  const { el, bytes, showAlert } = cutout;
  const root = document.getElementById("upload");
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const list = document.getElementById("files");
  const start = document.getElementById("start");
  const status = document.getElementById("start-status");
  const alertBox = document.getElementById("upload-alert");
  const options = new OptionControls(document.getElementById("upload-options"));
  let chosen = [];  // [{file, url}]: url is the thumbnail's object URL (none for archives)

  const isZip = (file) => /\.zip$/i.test(file.name) || /zip/.test(file.type);

  function add(files) {
    for (const file of files) chosen.push({ file, url: isZip(file) ? null : URL.createObjectURL(file) });
    showAlert(alertBox, "");
    render();
  }

  function remove(entry) {
    if (entry.url) URL.revokeObjectURL(entry.url);
    chosen = chosen.filter((e) => e !== entry);
    render();
  }

  function thumb(entry) {
    if (!entry.url) return el("span", { class: "thumb thumb-zip", "aria-hidden": "true" }, "ZIP");
    const img = el("img", { class: "thumb", src: entry.url, alt: "", loading: "lazy", decoding: "async" });
    // HEIC and friends have no preview in most browsers: show a plain tile instead of a broken image.
    img.addEventListener("error", () => img.replaceWith(el("span", { class: "thumb thumb-zip" }, "IMG")));
    return img;
  }

  function render() {
    list.replaceChildren(...chosen.map((entry) => el("li", { class: "file" },
      thumb(entry),
      el("span", { class: "file-info" },
        el("span", { class: "file-name", title: entry.file.name }, entry.file.name),
        el("span", { class: "muted small" }, bytes(entry.file.size))),
      el("button", { type: "button", class: "icon-btn", "aria-label": `Remove ${entry.file.name}`,
                     onclick: () => remove(entry) }, "×"))));
    const total = chosen.reduce((sum, e) => sum + e.file.size, 0);
    document.getElementById("files-head").hidden = !chosen.length;
    document.getElementById("files-summary").textContent =
      `${chosen.length} file${chosen.length === 1 ? "" : "s"} · ${bytes(total)}`;
    start.disabled = !chosen.length;
  }

  function busy(on, message = "") {
    start.disabled = on || !chosen.length;
    start.classList.toggle("loading", on);
    status.textContent = message;
  }

  function submit() {
    const form = new FormData();
    for (const { file } of chosen) form.append(isZip(file) ? "archive" : "images", file, file.name);
    options.appendTo(form);
    // The model sits beside the options, not among them: a preset never changes it.
    form.append("model", document.querySelector('#model-choice input[name="model"]:checked').value);
    // XHR rather than fetch: it reports upload progress, which matters for a few thousand photos.
    const xhr = new XMLHttpRequest();
    xhr.open("POST", root.dataset.submitUrl);
    xhr.setRequestHeader("X-CSRFToken", cutout.csrf());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) busy(true, `Uploading… ${Math.round((100 * e.loaded) / e.total)}%`);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON: a proxy's error page */ }
      if (xhr.status === 202 && body && body.job_id) {
        busy(true, "Starting…");
        window.location.assign(root.dataset.jobUrl.replace("JOB_ID", encodeURIComponent(body.job_id)));
      } else {
        busy(false);
        showAlert(alertBox, cutout.errorMessage(xhr.status, body));
      }
    });
    xhr.addEventListener("error", () => {
      busy(false);
      showAlert(alertBox, "The upload did not reach the server; check your connection and try again.");
    });
    busy(true, "Uploading…");
    xhr.send(form);
  }

  input.addEventListener("change", () => { add(input.files); input.value = ""; });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); add(e.dataTransfer.files); });
  // A file dropped beside the zone would make the browser navigate away to it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
  document.getElementById("clear-files").addEventListener("click", () => { [...chosen].forEach(remove); });
  start.addEventListener("click", submit);
})();
