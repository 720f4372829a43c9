/*
 * hashsvc intake page: hash the chosen photos here (hashing.js), show exactly what will be
 * sent, and send only that to POST /v1/intake with the one-time code.
 *
 * The code comes from the URL fragment (#code=...), which the browser never sends to any
 * server; it is removed from the address bar and history at once. The photos themselves are
 * read only by hashing.js, on this device: what is sent is the text shown in the preview, hash
 * lines made of the fields listed in SENT_FIELDS, nothing else.
 */
(function () {
  "use strict";

  /** The only fields of a hash line that are ever sent (no pixels, no thumbnails). */
  const SENT_FIELDS = ["file", "sha256", "md5", "size", "format", "width", "height", "hashes",
    "quality", "variants", "hash_format", "decode_version", "hashed_in"];

  const form = document.getElementById("intake-form");
  const codeInput = document.getElementById("code");
  const codeError = document.getElementById("code-error");
  const photosInput = document.getElementById("photos");
  const photosError = document.getElementById("photos-error");
  const keepNames = document.getElementById("keep-names");
  const filesSection = document.getElementById("files-section");
  const fileList = document.getElementById("file-list");
  const progressText = document.getElementById("hash-progress");
  const previewSection = document.getElementById("preview-section");
  const preview = document.getElementById("preview");
  const sendButton = document.getElementById("send-button");
  const result = document.getElementById("result");
  const maxLines = parseInt(form.dataset.maxLines || "10000", 10);
  const endpoint = form.dataset.endpoint || "/v1/intake";

  /** One entry per chosen file: {name, line?, error?}. */
  let entries = [];
  let busy = false;
  let sent = false;

  function showFieldError(input, errorEl, text) {
    if (text) {
      errorEl.textContent = text;
      errorEl.hidden = false;
      input.setAttribute("aria-invalid", "true");
    } else {
      errorEl.textContent = "";
      errorEl.hidden = true;
      input.removeAttribute("aria-invalid");
    }
  }

  function showResult(kind, text) {
    result.className = "message " + kind;
    result.setAttribute("role", kind === "error" ? "alert" : "status");
    result.textContent = text;
    result.focus();
  }

  function clearResult() {
    result.className = "";
    result.removeAttribute("role");
    result.textContent = "";
  }

  /** The code from the link's fragment, then the fragment dropped from the address bar. */
  function takeCodeFromFragment() {
    const fragment = window.location.hash.replace(/^#/, "");
    if (!fragment) return;
    const code = new URLSearchParams(fragment).get("code");
    if (code) codeInput.value = code;
    if (window.history && typeof window.history.replaceState === "function") {
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
  }

  /** The line exactly as it will be sent: whitelisted fields, the chosen name. */
  function sentLine(line, index, name) {
    const out = {};
    for (const field of SENT_FIELDS) {
      if (field === "file") {
        out.file = keepNames.checked ? name : "photo " + (index + 1);
      } else if (line[field] !== undefined) {
        out[field] = line[field];
      }
    }
    return out;
  }

  /** The request body's text, as shown and as sent. */
  function bodyText() {
    const lines = [];
    entries.forEach(function (entry) {
      if (entry.line) lines.push(sentLine(entry.line, lines.length, entry.name));
    });
    return {count: lines.length,
      text: JSON.stringify({code: codeInput.value.trim(), lines: lines}, null, 2)};
  }

  function render() {
    fileList.textContent = "";
    entries.forEach(function (entry) {
      const item = document.createElement("li");
      const name = document.createElement("strong");
      name.textContent = entry.name;
      item.appendChild(name);
      const note = document.createElement("span");
      if (entry.line) {
        note.className = "good";
        note.textContent = " — hashed on this device.";
      } else if (entry.error) {
        note.className = "bad";
        note.textContent = " — not hashed: " + entry.error;
      } else {
        note.textContent = " — waiting…";
      }
      item.appendChild(note);
      fileList.appendChild(item);
    });
    filesSection.hidden = entries.length === 0;
    const body = bodyText();
    preview.textContent = body.text;
    previewSection.hidden = busy || body.count === 0;
    sendButton.disabled = busy || sent || body.count === 0;
  }

  async function hashChosen() {
    clearResult();
    showFieldError(photosInput, photosError, "");
    const files = Array.from(photosInput.files || []);
    if (files.length > maxLines) {
      showFieldError(photosInput, photosError, "Please choose at most " + maxLines + " photos at a time.");
      return;
    }
    sent = false;
    busy = true;
    entries = files.map(function (file) { return {name: file.name}; });
    render();
    for (let i = 0; i < files.length; i++) {
      const file = files[i];
      const entry = entries[i];
      progressText.textContent = "Hashing photo " + (i + 1) + " of " + files.length + "…";
      try {
        const first = await window.HashsvcHash.supported(file);
        if (!first.ok) throw new Error(first.reason || "this file cannot be hashed here");
        entry.line = await window.HashsvcHash.hashFile(file, file.name, function (fraction) {
          progressText.textContent = "Hashing photo " + (i + 1) + " of " + files.length +
            " (" + Math.round(100 * fraction) + "%)…";
        });
      } catch (err) {
        const text = err && err.message ? err.message : String(err);
        entry.error = text.charAt(0).toUpperCase() + text.slice(1);
      }
      render();
    }
    busy = false;
    const good = entries.filter(function (e) { return e.line; }).length;
    const bad = entries.length - good;
    progressText.textContent = good + " of " + entries.length + " photos hashed on this device" +
      (bad ? "; " + bad + " could not be (see below)." : ".") +
      (good ? " Check what will be sent, then send it." : "");
    render();
  }

  async function send() {
    clearResult();
    showFieldError(codeInput, codeError, "");
    if (!codeInput.value.trim()) {
      showFieldError(codeInput, codeError, "Enter the registration code from your link.");
      codeInput.focus();
      return;
    }
    const body = bodyText();
    if (body.count === 0) return;
    preview.textContent = body.text;
    busy = true;
    sendButton.disabled = true;
    let response;
    try {
      response = await fetch(endpoint, {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: body.text,
        credentials: "omit",
        cache: "no-store",
        redirect: "error",
        referrerPolicy: "no-referrer",
      });
    } catch (err) {
      busy = false;
      render();
      showResult("error", "The hashes could not be sent: the server did not answer. Check your connection and try again.");
      return;
    }
    let answer = {};
    try { answer = await response.json(); } catch (err) { answer = {}; }
    busy = false;
    if (response.ok) {
      sent = true;
      render();
      const added = answer.images_added || 0;
      const again = answer.images_already_registered || 0;
      showResult("ok", "Done. " + added + (added === 1 ? " photo was" : " photos were") +
        " registered" + (again ? " (" + again + " had been registered before)" : "") +
        ". Nothing else was sent. You can close this page.");
      return;
    }
    render();
    const message = answer.message || ("The server answered " + response.status + ".");
    if (response.status === 401) {
      showFieldError(codeInput, codeError, "This code was not recognised. Check it, or ask your charity for a new link.");
      codeInput.focus();
    } else if (response.status === 410) {
      showResult("error", "This registration link can no longer be used (" + message + ").");
    } else if (response.status === 429) {
      showResult("error", "Too many attempts from this connection. Please wait a few minutes and try again.");
    } else {
      showResult("error", "The hashes were not registered: " + message);
    }
  }

  if (!window.HashsvcHash || window.HashsvcHash.version !== 1) {
    document.getElementById("intake-unavailable").hidden = false;
    photosInput.disabled = true;
    return;
  }
  if (!window.isSecureContext) document.getElementById("intake-insecure").hidden = false;
  takeCodeFromFragment();
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  photosInput.addEventListener("change", hashChosen);
  keepNames.addEventListener("change", render);
  codeInput.addEventListener("input", function () {
    showFieldError(codeInput, codeError, "");
    render();
  });
  sendButton.addEventListener("click", send);
  render();
})();
