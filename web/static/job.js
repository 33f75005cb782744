"use strict";
// One job: progress from Server-Sent Events, then the gallery, download, retry and recompose.
(() => {
  const { el, api, showAlert } = cutout;
  const $ = (id) => document.getElementById(id);
  const root = $("job");
  const urls = root.dataset;
  const ACTIVE = ["queued", "running"];
  const EAGER = 12;  // images this far down the gallery load at once; the rest when scrolled to
  const preview = new Preview($("preview"));
  const options = new OptionControls($("recompose-options"), (values) => preview.render(values));
  let source = null;
  let poll = null;
  let clock = null;  // {t, n}: when we started counting and how many were finished then, for the ETA
  let view = null;
  let previewItem = null;
  let filled = false;

  function follow() {
    stop();
    clock = null;
    source = new EventSource(urls.eventsUrl);
    const onEvent = (event) => progress(JSON.parse(event.data));
    source.addEventListener("snapshot", onEvent);
    source.addEventListener("progress", onEvent);
    // EventSource reconnects by itself; this poll only catches an end the stream did not report.
    poll = setInterval(() => api(urls.statusUrl).then(progress).catch(() => {}), 10000);
  }

  function stop() {
    if (source) source.close();
    clearInterval(poll);
    source = null;
  }

  function eta(n, total) {
    const now = Date.now();
    if (!clock || n < clock.n) { clock = { t: now, n }; return ""; }
    if (n === clock.n) return n < total ? "estimating time left…" : "";
    const seconds = Math.ceil(((total - n) * (now - clock.t)) / (n - clock.n) / 1000);
    return seconds < 90 ? `about ${seconds} s left` : `about ${Math.ceil(seconds / 60)} min left`;
  }

  function show(p) {
    const done = Number(p.done), failed = Number(p.failed), total = Number(p.total);
    const finished = !ACTIVE.includes(p.status);
    // Only "done" is 100%: the zip is still being written after the last image.
    const pct = finished ? 100 : total ? Math.min(99, Math.floor((100 * (done + failed)) / total)) : 0;
    $("progress").setAttribute("aria-valuenow", String(pct));
    $("progress").dataset.status = p.status;
    $("progress-fill").style.width = `${pct}%`;
    $("progress-text").textContent = `${done} / ${total} done`;
    const next = p.status === "done" && done ? "ready to download" : finished ? "" : eta(done + failed, total);
    $("progress-extra").textContent = [failed ? `${failed} failed` : "", next].filter(Boolean).join(" · ");
    $("job-status").textContent = p.status;
    $("job-status").className = `badge badge-${p.status}`;
    $("apply").disabled = !finished;  // the API refuses (409) to recompose or retry a running job
    if (!finished) $("retry").hidden = true;
    return finished;
  }

  // An item's event ({i, state, error}) redraws its card; its URLs are the input's with another variant.
  function updateItem(p) {
    const item = view && view.items.find((it) => String(it.index) === String(p.i));
    const node = item && $("gallery").querySelector(`[data-index="${item.index}"]`);
    if (!node || !item.input_url) return;
    const variant = (name) => item.input_url.replace("variant=input", `variant=${name}`);
    Object.assign(item, { state: p.state, error: p.error || null,
                          alpha_url: ["finishing", "done"].includes(p.state) ? variant("alpha") : null,
                          output_url: p.state === "done" ? variant("output") : null });
    node.replaceWith(card(item, true, Date.now()));
  }

  function progress(p) {
    if (p.i !== undefined) updateItem(p);
    const finished = show(p);
    if (finished && source) { stop(); load(); } else if (!finished && !view) load();
  }

  async function load() {
    try {
      view = await api(urls.statusUrl);
      // A large job's items come in pages (items_next links the next one): the gallery shows them all.
      for (let next = view.items_next; next; ) {
        const page = await api(next);
        view.items.push(...page.items);
        next = page.items_next;
      }
    } catch (err) {
      showAlert($("job-alert"), err.message);
      return;
    }
    const finished = show(view);
    const started = new Date(view.created * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    const hint = JSON.parse(urls.modelHints)[view.model];
    const model = `model ${view.model}${hint ? ` (${hint})` : ""}`;
    $("job-meta").textContent = `${view.total} image${view.total === 1 ? "" : "s"} · ${model} · started ${started}`;
    showAlert($("job-alert"), view.error || "");
    const download = $("download");
    download.classList.toggle("disabled", !view.download_url);
    download.setAttribute("aria-disabled", String(!view.download_url));
    if (view.download_url) download.href = view.download_url; else download.removeAttribute("href");
    $("retry").hidden = !(finished && view.failed > 0);
    $("retry").disabled = false;
    const stamp = Date.now();  // a recompose rewrites the same keys: new URLs skip the browser cache
    $("gallery").replaceChildren(...view.items.map((item, k) => card(item, k < EAGER, stamp)));
    setUpRecompose();
  }

  function shot(label, url, kind, item, eager) {
    const waiting = ["failed", "done"].includes(item.state) ? "No result" : "Working…";
    const empty = () => el("div", { class: "shot-empty" }, kind === "output" ? waiting : "—");
    if (!url) return el("figure", { class: `shot shot-${kind}` }, empty(), el("figcaption", {}, label));
    const img = el("img", { src: url, alt: `${label}: ${item.name}`, class: kind, loading: eager ? "eager" : "lazy",
                            decoding: "async" });
    const link = el("a", { href: url, target: "_blank", rel: "noopener", class: "shot-link" }, img);
    img.addEventListener("error", () => link.replaceWith(el("div", { class: "shot-empty" }, "No preview")));
    return el("figure", { class: `shot shot-${kind}` }, link, el("figcaption", {}, label));
  }

  function card(item, eager, stamp) {
    const fresh = (url) => url && `${url}${url.includes("?") ? "&" : "?"}v=${stamp}`;
    return el("article", { class: `item item-${item.state}`, "data-index": item.index },
      el("header", { class: "item-head" },
        el("span", { class: "item-name", title: item.name }, item.name),
        el("span", { class: `badge badge-${item.state}` }, item.state)),
      item.state === "failed" ? el("p", { class: "item-error" }, item.error || "This image could not be processed.") : null,
      el("div", { class: "shots" },
        shot("Before", item.input_url, "input", item, eager),
        shot("After", fresh(item.output_url), "output", item, eager),
        shot("Alpha", fresh(item.alpha_url), "alpha", item, eager)));
  }

  function setUpRecompose() {
    const first = view.items.find((item) => item.state === "done" && item.alpha_url && item.input_url);
    $("recompose").hidden = !first;
    if (!first) return;
    if (!filled) { options.fill(view.options); filled = true; }
    if (previewItem !== first.index) {
      previewItem = first.index;
      preview.render(options.values());
      preview.load(first.input_url, first.alpha_url).catch((err) => showAlert($("job-alert"), err.message));
    }
  }

  async function post(url, body, button) {
    button.disabled = true;
    try {
      await api(url, { method: "POST", body });
      showAlert($("job-alert"), "");
      follow();
    } catch (err) {
      button.disabled = false;
      showAlert($("job-alert"), err.message);
    }
  }

  $("retry").addEventListener("click", (e) => post(urls.retryUrl, null, e.currentTarget));
  $("apply").addEventListener("click", (e) => post(urls.recomposeUrl, options.appendTo(new FormData()), e.currentTarget));
  follow();
})();
