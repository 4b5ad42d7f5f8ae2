// The audience page (docs/ui.md "Audiences"): the CSV upload streamed as the request body, with
// a progress bar that polls the import. An interrupted upload of the same file (same name,
// size and modification time) resumes under its first import id, so no chunk is applied twice.
(function () {
  "use strict";
  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }
  function text(el, value) { el.textContent = value; }
  function summaryTable(s) {
    var table = document.createElement("table");
    table.className = "import-summary";
    var caption = document.createElement("caption");
    text(caption, "Import " + s.state + (s.error ? ": " + s.error : ""));
    table.appendChild(caption);
    var body = document.createElement("tbody");
    Object.keys(s.counts).forEach(function (k) {
      var tr = document.createElement("tr");
      var th = document.createElement("th"); th.scope = "row"; text(th, k.replace(/_/g, " "));
      var td = document.createElement("td"); td.className = "count-" + k; text(td, String(s.counts[k]));
      tr.appendChild(th); tr.appendChild(td); body.appendChild(tr);
    });
    table.appendChild(body);
    return table;
  }
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("import-form");
    if (!form) return;
    var status = document.getElementById("import-status");
    var bar = document.getElementById("import-progress");
    var label = document.getElementById("import-progress-text");
    var out = document.getElementById("import-summary");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = form.elements.file.files[0];
      if (!file) return;
      var mode = form.elements.mode.value;
      var memo = "mailctl-import:" + form.dataset.message + ":" + mode + ":" + file.name + ":" + file.size + ":" + file.lastModified;
      var id = localStorage.getItem(memo) || uuid();
      localStorage.setItem(memo, id);
      var params = new URLSearchParams({ import_id: id, mode: mode, file_name: file.name, total_bytes: String(file.size) });
      ["map_contact_id", "map_email", "map_time_zone"].forEach(function (n) {
        if (form.elements[n].value) params.set(n, form.elements[n].value);
      });
      status.hidden = false;
      out.replaceChildren();
      bar.value = 0;
      text(label, "Uploading " + file.name + "…");
      var done = false;
      function poll() {
        if (done) return;
        fetch("/ui/imports/" + id, { credentials: "same-origin" }).then(function (r) {
          return r.ok ? r.json() : null;
        }).then(function (s) {
          if (s && !done) {
            if (s.progress !== null) bar.value = s.progress;
            text(label, s.rows_read + " rows read, " + s.chunks_done + " chunks applied");
          }
          if (!done) setTimeout(poll, 500);
        }).catch(function () { if (!done) setTimeout(poll, 1000); });
      }
      setTimeout(poll, 300);
      // The File itself is the body: the browser streams it from disk.
      fetch("/ui/messages/" + form.dataset.message + "/audience/upload?" + params.toString(), {
        method: "POST",
        body: file,
        credentials: "same-origin",
        headers: { "Content-Type": "text/csv", "X-CSRF-Token": form.dataset.csrf }
      }).then(function (r) { return r.json(); }).then(function (s) {
        done = true;
        if (s.error) { text(label, s.error); return; }
        bar.value = 1;
        text(label, s.rows_read + " rows read, " + s.chunks_done + " chunks applied");
        if (s.state === "done") localStorage.removeItem(memo);
        out.appendChild(summaryTable(s));
        if (s.problems) {
          var a = document.createElement("a");
          a.href = "/ui/imports/" + id + "/problems.csv";
          text(a, "Download the " + s.problems + " rows not applied, with line numbers and reasons (CSV)");
          out.appendChild(a);
        }
      }).catch(function () {
        done = true;
        text(label, "The upload stopped. Choose the same file again to resume it.");
      });
    });
  });
})();
