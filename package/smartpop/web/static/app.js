/* SmartPop UI behaviour: AJAX buttons, fetch-now progress, presets, copy, confirmations.
   Plain ES2017, no libraries; every text comes from the #i18n catalog the server rendered. */
(function () {
  "use strict";
  var texts = {};
  try { texts = JSON.parse(document.getElementById("i18n").textContent); } catch (e) { texts = {}; }
  function t(key) { return texts[key] || key; }
  // "{name}" placeholders of a catalog text filled from `values` (missing ones become "?").
  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, function (all, name) {
      var value = values[name];
      return value === null || value === undefined ? "?" : String(value);
    });
  }
  // One account's fetch outcome in the page's language (the server's own lines are English).
  function resultLine(r) {
    if (r.skipped) { return fill(t("js.result_skipped"), r); }
    if (r.error && !r.collected) { return fill(t("js.result_failed"), r); }
    return fill(t("js.result_ok"), r) + (r.error ? fill(t("js.result_problem"), r) : "");
  }
  var csrf = document.body.getAttribute("data-csrf") || "";

  // DSM's CSRF token (SynoToken). Under DSM (data-base is the CGI's path) authenticate.cgi wants
  // it on every request: the X-Syno-Token header for fetch(), ?SynoToken= for links and POST
  // forms (the CGI hands authenticate.cgi the query, never the body; the server already renders
  // its URLs with it), a hidden field for GET forms (their query is rebuilt from the fields).
  // Forms without an action are sent by fetch(). It comes from this page's URL, else from
  // the DSM window that opened the app, else from DSM's /webman/login.cgi (same origin: no other
  // site can read it). The way tailscale's and Duplicati's DSM packages get it; see index.cgi.
  var base = document.body.getAttribute("data-base") || "";
  var synoToken = "";
  function tokenFromDsm() {
    var windows = [window.parent, window.opener];
    for (var i = 0; i < windows.length; i++) {
      try {
        var w = windows[i];
        var found = w && w !== window && w.SYNO && w.SYNO.SDS && w.SYNO.SDS.Session && w.SYNO.SDS.Session.SynoToken;
        if (typeof found === "string" && found) { return found; }
      } catch (e) { /* a window of another origin is not DSM */ }
    }
    return "";
  }
  function inApp(url) {
    return url.origin === window.location.origin && (url.pathname === base || url.pathname.indexOf(base + "/") === 0);
  }
  function stamp(root) {
    if (!synoToken || !base) { return; }
    root.querySelectorAll("a[href]").forEach(function (a) {
      var url = new URL(a.getAttribute("href"), window.location.href);
      if (!inApp(url)) { return; }
      url.searchParams.set("SynoToken", synoToken);
      a.setAttribute("href", url.pathname + url.search + url.hash);
    });
    root.querySelectorAll("form[action]").forEach(function (form) {
      var url = new URL(form.getAttribute("action"), window.location.href);
      if (!inApp(url)) { return; }
      if ((form.getAttribute("method") || "get").toLowerCase() === "post") {
        url.searchParams.set("SynoToken", synoToken);
        form.setAttribute("action", url.pathname + url.search);
        return;
      }
      var field = form.querySelector("input[name=SynoToken]");
      if (!field) {
        field = document.createElement("input");
        field.type = "hidden"; field.name = "SynoToken"; form.appendChild(field);
      }
      field.value = synoToken;
    });
  }
  var tokenReady;
  if (base) {
    synoToken = new URLSearchParams(window.location.search).get("SynoToken") || tokenFromDsm();
    tokenReady = synoToken ? Promise.resolve(synoToken) :
      fetch("/webman/login.cgi", { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (d) { synoToken = d && typeof d.SynoToken === "string" ? d.SynoToken : ""; return synoToken; })
        .catch(function () { return ""; });
    tokenReady.then(function () { stamp(document); });
  } else {
    tokenReady = Promise.resolve("");  // dev mode: no DSM in front
  }
  function headers(extra) {
    var all = {};
    Object.keys(extra || {}).forEach(function (k) { all[k] = extra[k]; });
    if (synoToken) { all["X-Syno-Token"] = synoToken; }
    return all;
  }
  function get(url) {
    return tokenReady.then(function () { return fetch(url, { credentials: "same-origin", headers: headers() }); });
  }

  function post(url, body) {
    return tokenReady.then(function () {
      return fetch(url, {
        method: "POST", body: body, credentials: "same-origin",
        headers: headers({ "X-SmartPop-CSRF": csrf, "Accept": "application/json" })
      });
    }).then(function (r) {
      return r.json().catch(function () { return { ok: false, message: t("js.request_failed") + " (HTTP " + r.status + ")" }; });
    });
  }

  function show(el, ok, message) {
    el.hidden = false;
    el.className = el.className.replace(/\b(good|bad|busy)\b/g, "").trim() + " " + (ok === null ? "busy" : (ok ? "good" : "bad"));
    el.textContent = message;
  }

  // Buttons that POST their form (or nothing) to data-ajax-post and show the JSON answer.
  document.querySelectorAll("[data-ajax-post]").forEach(function (button) {
    button.addEventListener("click", function () {
      var target = document.getElementById(button.getAttribute("data-result"));
      var form = button.closest("form");
      var body = form ? new FormData(form) : new FormData();
      button.disabled = true;
      show(target, null, t("js.working"));
      post(button.getAttribute("data-ajax-post"), body).then(function (answer) {
        show(target, !!answer.ok, answer.message || "");
      }).catch(function () { show(target, false, t("js.request_failed")); })
        .then(function () { button.disabled = false; });
    });
  });

  // Forms that delete something ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(t("js.confirm_delete"))) { event.preventDefault(); }
    });
  });

  // Copy buttons (the clipboard API needs a secure context; fall back to a selection).
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var text = source.textContent;
      function done(ok) { button.textContent = ok ? t("js.copied") : t("js.copy_failed"); }
      function fallback() {
        var area = document.createElement("textarea");
        area.value = text; document.body.appendChild(area); area.select();
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        document.body.removeChild(area); done(ok);
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
      } else { fallback(); }
    });
  });

  // Account form: the password field or the OAuth2 fields, and per provider tenant or client secret.
  var authSelect = document.getElementById("f-auth");
  function syncAuth() {
    if (!authSelect) { return; }
    var provider = document.getElementById("f-provider").value;
    document.querySelectorAll("[data-auth]").forEach(function (el) {
      el.hidden = el.getAttribute("data-auth") !== authSelect.value;
    });
    document.querySelectorAll("[data-provider]").forEach(function (el) {
      if (el.id === "signin") { return; }
      el.hidden = el.getAttribute("data-provider") !== provider;
    });
  }
  if (authSelect) {
    authSelect.addEventListener("change", syncAuth);
    document.getElementById("f-provider").addEventListener("change", syncAuth);
  }

  // Provider presets fill host, port and security.
  var presetSelect = document.getElementById("f-preset");
  var presetData = document.getElementById("presets");
  if (presetSelect && presetData) {
    var presets = JSON.parse(presetData.textContent);
    var notesEl = document.getElementById("preset-notes");
    var notes = notesEl ? JSON.parse(notesEl.textContent) : {};
    presetSelect.addEventListener("change", function () {
      var preset = presets.filter(function (p) { return p.id === presetSelect.value; })[0];
      if (!preset) { return; }
      var form = presetSelect.closest("form");
      var kind = presetSelect.getAttribute("data-presets-target") === "relay" ? "smtp" : form.elements.protocol.value;
      var entry = preset[kind];
      form.elements.host.value = entry.host;
      form.elements.port.value = entry.port;
      form.elements.security.value = entry.security;
      var note = document.getElementById("preset-note");
      if (note) { note.textContent = preset.note ? (notes[preset.note] || "") : ""; }
      if (form.elements.auth) {
        form.elements.auth.value = preset.oauth ? "oauth2" : "password";
        if (preset.oauth) { form.elements.provider.value = preset.oauth; }
        syncAuth();
      }
    });
    var protocol = document.getElementById("f-protocol");
    if (protocol) {
      protocol.addEventListener("change", function () {
        if (presetSelect.value) { presetSelect.dispatchEvent(new Event("change")); }
      });
    }
  }

  // Dashboard: "fetch now" with progress polled from the backend.
  var fetchButton = document.getElementById("fetch-now");
  if (fetchButton) {
    var box = document.getElementById("fetch-progress");
    var bar = document.getElementById("fetch-bar");
    var text = document.getElementById("fetch-text");
    var lines = document.getElementById("fetch-lines");
    var rows = document.getElementById("status-rows");
    var refreshRows = function () {
      return get(fetchButton.getAttribute("data-rows-url"))
        .then(function (r) { return r.text(); }).then(function (html) { rows.innerHTML = html; stamp(rows); });
    };
    var render = function (job) {
      box.hidden = false;
      var names = Object.keys(job.progress || {});
      var done = 0, total = 0;
      var parts = names.map(function (name) {
        var p = job.progress[name];
        done += p.done || 0; total += p.total || 0;
        var count = p.total ? " " + p.done + "/" + p.total : "";
        return name + ": " + t("phase." + p.phase) + count;
      });
      bar.style.width = (total ? Math.round(100 * done / total) : (job.running ? 5 : 100)) + "%";
      if (job.running) {
        text.textContent = t("js.fetch_running") + (parts.length ? " " + parts.join(" · ") : "");
      } else if (job.error) {
        text.textContent = t("js.fetch_failed") + " " + job.error;
      } else {
        text.textContent = job.ok ? t("js.fetch_done") : t("js.fetch_problems");
      }
      lines.innerHTML = "";
      (job.results ? job.results.map(resultLine) : (job.lines || [])).forEach(function (line) {
        var li = document.createElement("li"); li.textContent = line; lines.appendChild(li);
      });
      box.setAttribute("data-state", job.running ? "running" : (job.ok ? "done" : "failed"));
    };
    var poll = function () {
      get(fetchButton.getAttribute("data-progress-url"))
        .then(function (r) { return r.json(); })
        .then(function (job) {
          render(job);
          if (job.running) { refreshRows(); window.setTimeout(poll, 700); }
          else { fetchButton.disabled = false; refreshRows(); }
        }).catch(function () { fetchButton.disabled = false; text.textContent = t("js.request_failed"); });
    };
    fetchButton.addEventListener("click", function () {
      fetchButton.disabled = true;
      box.hidden = false; box.setAttribute("data-state", "running");
      text.textContent = t("js.working");
      post(fetchButton.getAttribute("data-url"), new FormData()).then(function (answer) {
        if (!answer.ok) {
          fetchButton.disabled = false; box.setAttribute("data-state", "failed");
          text.textContent = answer.message || t("js.fetch_failed"); return;
        }
        render(answer.job); window.setTimeout(poll, 300);
      }).catch(function () { fetchButton.disabled = false; text.textContent = t("js.request_failed"); });
    });
    if (fetchButton.getAttribute("data-running")) { fetchButton.disabled = true; poll(); }
    // The daemon also collects on its own schedule: keep the rows current while the page is open.
    window.setInterval(function () { if (!fetchButton.disabled && !document.hidden) { refreshRows(); } }, 15000);
  }
  // Health: "Run checks now" with progress, and the round trip, both polled while they run.
  var healthButton = document.getElementById("health-run");
  if (healthButton) {
    var hBox = document.getElementById("health-progress");
    var hBar = document.getElementById("health-bar");
    var hText = document.getElementById("health-text");
    var findings = document.getElementById("health-findings");
    var refreshFindings = function () {
      return get(healthButton.getAttribute("data-findings-url"))
        .then(function (r) { return r.text(); }).then(function (html) { findings.innerHTML = html; stamp(findings); });
    };
    var renderChecks = function (job) {
      hBox.hidden = false;
      hBar.style.width = (job.total ? Math.round(100 * job.done / job.total) : (job.running ? 5 : 100)) + "%";
      if (job.running) {
        hText.textContent = t("js.health_running") + (job.total ? " " + job.done + "/" + job.total : "") +
          (job.step ? " · " + job.step : "");
      } else if (job.error) {
        hText.textContent = job.error === "busy" ? t("js.health_busy") : t("js.health_failed") + " " + job.error;
      } else {
        hText.textContent = t("js.health_done");
      }
      hBox.setAttribute("data-state", job.running ? "running" : (job.error ? "failed" : "done"));
    };
    var pollChecks = function () {
      get(healthButton.getAttribute("data-progress-url"))
        .then(function (r) { return r.json(); })
        .then(function (state) {
          renderChecks(state.checks);
          if (state.checks.running) { window.setTimeout(pollChecks, 1000); }
          else { healthButton.disabled = false; refreshFindings(); }
        }).catch(function () { healthButton.disabled = false; hText.textContent = t("js.request_failed"); });
    };
    healthButton.addEventListener("click", function () {
      healthButton.disabled = true;
      hBox.hidden = false; hBox.setAttribute("data-state", "running");
      hText.textContent = t("js.working");
      post(healthButton.getAttribute("data-url"), new FormData()).then(function (answer) {
        if (!answer.ok) { healthButton.disabled = false; hText.textContent = answer.message; return; }
        renderChecks(answer.jobs.checks); window.setTimeout(pollChecks, 500);
      }).catch(function () { healthButton.disabled = false; hText.textContent = t("js.request_failed"); });
    });
    if (healthButton.getAttribute("data-running")) { healthButton.disabled = true; pollChecks(); }
  }
  var tripButton = document.getElementById("roundtrip-run");
  if (tripButton) {
    var tripResult = document.getElementById("roundtrip-result");
    var pollTrip = function () {
      get(tripButton.getAttribute("data-progress-url"))
        .then(function (r) { return r.json(); })
        .then(function (state) {
          var trip = state.round_trip;
          var finding = trip.finding;
          var waiting = trip.sending || (finding && finding.state === "pending");
          if (trip.error) { show(tripResult, false, trip.error); }
          else if (trip.sending) { show(tripResult, null, t("health.roundtrip.sending")); }
          else if (finding) { show(tripResult, finding.state === "pending" ? null : finding.status === "ok", finding.summary); }
          // Polled only while a message is on its way; nothing runs once it is back or expired.
          if (waiting && !trip.error) { window.setTimeout(pollTrip, 2000); }
          else { tripButton.disabled = false; }
        }).catch(function () { tripButton.disabled = false; show(tripResult, false, t("js.request_failed")); });
    };
    tripButton.addEventListener("click", function () {
      tripButton.disabled = true;
      show(tripResult, null, t("health.roundtrip.sending"));
      post(tripButton.getAttribute("data-url"), new FormData()).then(function (answer) {
        if (!answer.ok) { tripButton.disabled = false; show(tripResult, false, answer.message); return; }
        window.setTimeout(pollTrip, 1000);
      }).catch(function () { tripButton.disabled = false; show(tripResult, false, t("js.request_failed")); });
    });
    if (tripButton.getAttribute("data-running")) { tripButton.disabled = true; pollTrip(); }
  }
  // Trail: a click anywhere on a result row opens that message's path (the time cell is the link).
  var trailTable = document.getElementById("trail-table");
  if (trailTable) {
    trailTable.addEventListener("click", function (event) {
      var row = event.target.closest("tr[data-href]");
      if (!row || event.target.closest("a")) { return; }
      var link = row.querySelector("a.trail-open");
      if (link) { link.click(); }
    });
  }
  // Device sign-in: ask the backend (which asks the provider) at the provider's interval until done.
  var deviceBox = document.getElementById("device-signin");
  if (deviceBox) {
    var deviceStatus = document.getElementById("device-status");
    var pollDevice = function () {
      var body = new FormData();
      body.append("attempt", deviceBox.getAttribute("data-attempt"));
      post(deviceBox.getAttribute("data-poll-url"), body).then(function (answer) {
        if (answer.state === "pending") {
          show(deviceStatus, null, answer.message || t("signin.waiting"));
          window.setTimeout(pollDevice, Math.max(1, answer.interval || 5) * 1000);
        } else if (answer.state === "done") {
          show(deviceStatus, true, answer.message || t("signin.done"));
          window.location.href = answer.next;
        } else {
          show(deviceStatus, false, answer.message || t("js.request_failed"));
          document.getElementById("restart-form").hidden = false;
        }
      }).catch(function () {
        show(deviceStatus, false, t("js.request_failed"));
        document.getElementById("restart-form").hidden = false;
      });
    };
    window.setTimeout(pollDevice, Math.max(1, parseInt(deviceBox.getAttribute("data-interval"), 10) || 5) * 1000);
  }
})();
