"use strict";
// My jobs: a table from GET /api/v1/jobs, newest first, each with a link and a Delete button.
(() => {
  const { el, api, showAlert } = cutout;
  const root = document.getElementById("jobs");
  const body = document.getElementById("jobs-body");
  const alertBox = document.getElementById("jobs-alert");
  const jobUrl = (id) => root.dataset.jobUrl.replace("JOB_ID", encodeURIComponent(id));
  const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  async function remove(job, row) {
    if (!window.confirm(`Delete job ${job.job_id.slice(0, 8)} and all its files?`)) return;
    try {
      await api(`${root.dataset.listUrl}/${encodeURIComponent(job.job_id)}`, { method: "DELETE" });
      row.remove();
      if (!body.children.length) empty();
    } catch (err) {
      showAlert(alertBox, err.message);
    }
  }

  function row(job) {
    const tr = el("tr", {},
      el("td", {}, el("a", { href: jobUrl(job.job_id), class: "mono" }, job.job_id.slice(0, 8))),
      el("td", {}, el("span", { class: `badge badge-${job.status}` }, job.status)),
      el("td", { class: "mono" }, job.model),
      el("td", {}, `${job.done} / ${job.total}`, job.failed ? el("span", { class: "muted" }, ` · ${job.failed} failed`) : null),
      el("td", { class: "muted" }, when.format(new Date(job.created * 1000))),
      el("td", { class: "right" },
        el("a", { class: "btn btn-sm", href: jobUrl(job.job_id) }, "Open"), " ",
        el("button", { type: "button", class: "btn btn-sm btn-danger", onclick: () => remove(job, tr) }, "Delete")));
    return tr;
  }

  function empty() {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty center" },
      "No jobs yet. ", el("a", { href: root.dataset.uploadUrl }, "Upload some images"), " to start one.")));
  }

  // The API answers a page at a time, newest first; "Show older jobs" follows its `next` link.
  const more = document.getElementById("jobs-more");
  let next = null;

  async function page(url, first) {
    try {
      const { jobs, next: after } = await api(url);
      jobs.sort((a, b) => b.created - a.created);
      if (first) { if (jobs.length) body.replaceChildren(...jobs.map(row)); else empty(); } else body.append(...jobs.map(row));
      next = after;
      more.hidden = !next;
    } catch (err) {
      if (first) body.replaceChildren();
      showAlert(alertBox, err.message);
    }
  }

  more.addEventListener("click", () => { more.disabled = true; page(next, false).finally(() => { more.disabled = false; }); });
  page(root.dataset.listUrl, true);
})();
