// Remote consultation pages: progress on long actions, the live discussion (Server-Sent Events),
// attachments, and the case packet's vital-sign chart. No inline scripts (the CSP forbids them).
(function () {
  "use strict";

  function labels() {
    var el = document.getElementById("consult-labels");
    return el ? JSON.parse(el.textContent) : {};
  }

  // Long actions: once the submit really goes ahead (after any confirm()), disable and say so.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset || !form.dataset.progress) return;
    setTimeout(function () {
      if (event.defaultPrevented) return;
      form.querySelectorAll("button[type=submit]").forEach(function (b) {
        b.disabled = true; b.dataset.label = b.textContent; b.textContent = form.dataset.progress;
      });
      form.classList.add("busy");
    }, 0);
  });

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  var CHINA_OFFSET_MS = 8 * 3600 * 1000;

  function localTime(iso) {
    var d = new Date(iso);
    var pad = function (n) { return String(n).padStart(2, "0"); };
    // The pages show China time (UTC+8) whatever the browser's zone.
    var cn = new Date(d.getTime() + CHINA_OFFSET_MS);
    return cn.getUTCFullYear() + "-" + pad(cn.getUTCMonth() + 1) + "-" + pad(cn.getUTCDate()) + " " +
      pad(cn.getUTCHours()) + ":" + pad(cn.getUTCMinutes());
  }

  function discussion() {
    var box = document.getElementById("discussion");
    if (!box) return;
    var text = labels();
    var id = box.dataset.consultation, me = box.dataset.me, csrf = box.dataset.csrf;
    var list = document.getElementById("messages");
    var badge = document.getElementById("live-badge");
    var api = "/api/v1/consult/consultations/" + encodeURIComponent(id);

    function append(m) {
      if (list.querySelector('[data-id="' + m.id + '"]')) return;
      var item = el("li", "message" + (m.author_id === me ? " mine" : ""));
      item.dataset.id = m.id;
      var meta = el("div", "meta");
      meta.appendChild(el("strong", "", m.author));
      meta.appendChild(document.createTextNode(" · " + m.institution + " · "));
      var time = el("time", "", localTime(m.sent_at)); time.setAttribute("datetime", m.sent_at);
      meta.appendChild(time);
      item.appendChild(meta);
      item.appendChild(el("div", "body", m.body));
      if (m.attachment_ids && m.attachment_ids.length) {
        item.appendChild(el("div", "attached", text.attachments.replace("%(n)s", m.attachment_ids.length)));
        listAttachments();  // the other side's new file appears in the list too
      }
      list.appendChild(item);
      var empty = box.querySelector(".empty-messages"); if (empty) empty.hidden = true;
      item.scrollIntoView({ block: "nearest" });
    }

    var source = new EventSource("/consult/" + encodeURIComponent(id) + "/stream?seen=" + box.dataset.seen);
    source.onopen = function () { badge.textContent = text.live; badge.className = "badge green"; };
    source.onerror = function () { badge.textContent = text.reconnecting; badge.className = "badge orange"; };
    source.addEventListener("message", function (event) { append(JSON.parse(event.data)); });
    source.addEventListener("status", function (event) {
      var data = JSON.parse(event.data);
      var banner = document.getElementById("live-status");
      if (!banner) return;
      banner.querySelector(".text").textContent = text.status_changed + " " + data.business_status;
      banner.hidden = false;
    });
    window.addEventListener("beforeunload", function () { source.close(); });

    function listAttachments() {
      var section = document.getElementById("attachments");
      fetch(api + "/attachments", { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) return null;
        return r.json();
      }).then(function (data) {
        if (!data || !data.items) return;
        var ul = section.querySelector("ul"); ul.innerHTML = "";
        data.items.forEach(function (a) {
          var li = el("li");
          var link = el("a", "", a.filename); link.href = api + "/attachments/" + encodeURIComponent(a.id);
          li.appendChild(link);
          li.appendChild(document.createTextNode(" · " + (a.description || "") + " · " + Math.ceil(a.size / 1024) + " KB"));
          li.appendChild(el("span", "mono", " sha256 " + String(a.sha256 || "").slice(0, 12)));
          ul.appendChild(li);
        });
        section.hidden = data.items.length === 0;
      }).catch(function () {});
    }

    var form = document.getElementById("message-form");
    listAttachments();
    if (!form) return;
    var fileInput = document.getElementById("attachment-file");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = document.getElementById("message-body");
      var progress = form.querySelector(".progress"), failure = form.querySelector(".send-error");
      var button = form.querySelector("button[type=submit]");
      progress.hidden = false; failure.hidden = true; button.disabled = true;
      function fail(prefix, response) {
        return response.json().catch(function () { return {}; }).then(function (problem) {
          var details = (problem.errors || []).map(function (e) { return e.message_zh || e.message || e.msg; });
          failure.textContent = prefix + " " + (details.length ? details.join("；") : (problem.detail || response.status));
          failure.hidden = false;
          throw new Error("refused");
        });
      }
      var upload = Promise.resolve([]);
      if (fileInput && fileInput.files && fileInput.files.length) {
        var data = new FormData();
        data.append("file", fileInput.files[0]);
        data.append("description", document.getElementById("attachment-description").value);
        upload = fetch(api + "/attachments", { method: "POST", body: data, credentials: "same-origin",
                                               headers: { "X-CSRF-Token": csrf } })
          .then(function (r) { return r.status === 201 ? r.json().then(function (a) { return [a.id]; }) : fail(text.upload_failed, r); });
      }
      upload.then(function (ids) {
        var payload = { body: body.value };
        if (ids.length) payload.attachment_ids = ids;
        return fetch(api + "/messages", { method: "POST", credentials: "same-origin", body: JSON.stringify(payload),
                                          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf } })
          .then(function (r) {
            if (r.status !== 201) return fail(text.send_failed, r);
            body.value = "";
            if (fileInput) { fileInput.value = ""; document.getElementById("attachment-description").value = ""; }
            if (ids.length) listAttachments();
          });
      }).catch(function () {}).then(function () { progress.hidden = true; button.disabled = false; });
    });
  }

  // The case packet's vital signs: one small chart per sign, each on its own scale.
  function vitalsChart() {
    var node = document.querySelector("[data-vitals-chart]");
    if (!node || typeof echarts === "undefined") return;
    var spec = JSON.parse(document.getElementById(node.dataset.vitalsChart).textContent);
    var names = JSON.parse(document.getElementById("vitals-labels").textContent);
    var option = { animation: false, tooltip: { trigger: "item" }, grid: [], xAxis: [], yAxis: [], series: [] };
    if (spec.type === "series") {
      var n = spec.series.length, h = 100;
      node.style.height = (n * h + 30) + "px";
      spec.series.forEach(function (s, i) {
        option.grid.push({ left: 70, right: 20, top: i * h + 28, height: h - 48 });
        option.xAxis.push({ type: "time", gridIndex: i, axisLabel: { show: i === n - 1 } });
        option.yAxis.push({ type: "value", gridIndex: i, scale: true, name: names[s.name] || s.name, splitNumber: 2 });
        option.series.push({ type: "line", xAxisIndex: i, yAxisIndex: i, showSymbol: s.data.length < 3, name: names[s.name] || s.name,
          data: s.data.map(function (p) { return Array.isArray(p) ? [new Date(p[0]).getTime() + CHINA_OFFSET_MS, p[1]] : p; }) });
      });
      option.tooltip = { trigger: "axis" };
      option.useUTC = true;  // the times were shifted to China time, as the table beside shows them
    } else {
      var count = spec.categories.length, width = 100 / count;
      node.style.height = "220px";
      spec.categories.forEach(function (name, i) {
        option.grid.push({ left: (i * width + 3) + "%", width: (width - 5) + "%", top: 20, bottom: 30, containLabel: true });
        option.xAxis.push({ type: "category", gridIndex: i, data: [names[name] || name], axisTick: { show: false } });
        option.yAxis.push({ type: "value", gridIndex: i, scale: true, splitNumber: 3 });
        // Candlestick: open = first, close = last, low = min, high = max of the last 24 hours.
        option.series.push({ type: "candlestick", xAxisIndex: i, yAxisIndex: i, barMaxWidth: 26, name: names[name] || name,
          itemStyle: { color: "#d0342c", color0: "#0b5cad", borderColor: "#d0342c", borderColor0: "#0b5cad" },
          data: [[spec.first[i], spec.last[i], spec.min[i], spec.max[i]]] });
      });
    }
    echarts.init(node, null, { renderer: "svg" }).setOption(option);
  }

  document.addEventListener("DOMContentLoaded", function () { discussion(); vitalsChart(); });
})();
