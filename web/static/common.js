"use strict";
// Helpers every page uses: the CSRF token, JSON calls to the API, DOM building and alerts.
const cutout = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function errorMessage(status, body) {
    // The API answers {"error": {"code", "message"}}; the message says what to change.
    return (body && body.error && body.error.message) || `The server answered ${status}; please try again.`;
  }

  async function api(url, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = csrf();
    let response;
    try {
      response = await fetch(url, { method, body, headers, credentials: "same-origin" });
    } catch {
      throw new Error("The server could not be reached; check your connection and try again.");
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error(errorMessage(response.status, data));
    return data;
  }

  // el("a", {class: "btn", href: "/x", onclick: fn}, "text", child) -> an element; never innerHTML,
  // so file names from uploads are always text.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function showAlert(box, message, kind = "error") {
    // API messages start in lower case ("more than 500 files ..."); an alert reads as a sentence.
    box.textContent = message ? message[0].toUpperCase() + message.slice(1) : "";
    box.className = `alert alert-${kind}`;
    box.hidden = !message;
    if (message) box.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function bytes(n) {
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
  }

  return { csrf, api, errorMessage, el, showAlert, bytes };
})();
