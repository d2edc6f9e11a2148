// The central station: one Server-Sent Events stream per ward; each message is a bed's whole state.
(function () {
  "use strict";
  var station = document.querySelector(".station");
  if (!station) return;
  var ward = station.dataset.ward;
  var labels = JSON.parse(station.dataset.labels);
  var states = {};
  var soundOn = false;
  var audio = null;

  function text(el, value) { if (el && el.textContent !== value) el.textContent = value; }
  function fmt(v, digits) { return v === undefined || v === null ? "–" : Number(v).toFixed(digits || 0); }

  function conditionLabel(c) {
    if (labels.conditions[c]) return labels.conditions[c];
    var parts = c.split(":"), kind = parts[0], name = parts[1] || "";
    if (kind === "limit") {
      var bits = name.split("_"), level = bits.pop(), critical = false;
      if (level === "critical") { critical = true; level = bits.pop(); }
      var param = bits.join("_");
      return (labels.params[param] || param) + " " + (labels[level] || level) + (critical ? " (" + labels.critical + ")" : "");
    }
    var param2 = labels.params[name] || name;
    if (kind === "no_data") return param2 + " " + labels.no_data;
    if (kind === "sensor_off") return param2 + " " + labels.sensor_off;
    if (kind === "implausible") return param2 + " " + labels.implausible;
    return c;
  }

  function vital(state, key) { var v = state.vitals[key]; return v ? v[0] : null; }

  function render(state) {
    states[state.bed_id] = state;
    var tile = document.getElementById("bed-" + state.bed_id);
    if (!tile) return;
    var hr = vital(state, "heart_rate"); if (hr === null) hr = vital(state, "pulse_rate");
    var fields = {
      pulse: hr, spo2: vital(state, "spo2"), respiratory_rate: vital(state, "respiratory_rate"),
      temperature: vital(state, "temperature")
    };
    Object.keys(fields).forEach(function (k) {
      var el = tile.querySelector('[data-field="' + k + '"]');
      var off = state.flags[k === "pulse" ? "heart_rate" : k];
      if (off) { text(el, off === "sensor_off" ? labels.sensor_off : labels.implausible); el.className = "off"; }
      else { text(el, fmt(fields[k], k === "temperature" ? 1 : 0)); el.className = ""; }
    });
    var sbp = vital(state, "systolic_bp"), dbp = vital(state, "diastolic_bp");
    text(tile.querySelector('[data-field="bp"]'), sbp === null ? "–" : fmt(sbp) + "/" + fmt(dbp));
    var news = tile.querySelector('[data-field="news2"]');
    if (state.news2) {
      text(news, "NEWS2 " + state.news2.total + (state.news2.partial ? "*" : ""));
      news.className = "news2 band-" + state.news2.band;
      news.title = state.news2.partial ? labels.partial + ": " + state.news2.missing.join(", ") : "";
    }
    var risk = tile.querySelector('[data-field="risk"]');
    if (state.sepsis && state.sepsis.risk !== null) {
      text(risk, labels.risk + " " + Math.round(state.sepsis.risk * 100) + "%");
      risk.className = "risk" + (state.sepsis.alarm ? " flagged" : "");
    }
    var top = state.alarms[0];
    var line = tile.querySelector('[data-field="alarm"]');
    tile.classList.remove("alarm-high", "alarm-medium", "alarm-low", "acked", "stale");
    if (top) {
      tile.classList.add("alarm-" + top.priority);
      if (top.acknowledged) tile.classList.add("acked");
      text(line, conditionLabel(top.condition) + (state.alarms.length > 1 ? " +" + (state.alarms.length - 1) : ""));
      line.className = "alarmline " + top.priority;
    } else { text(line, ""); }
    tile.dataset.updated = Date.now();
    renderAlarmList();
  }

  function renderAlarmList() {
    var all = [];
    Object.keys(states).forEach(function (bed) {
      states[bed].alarms.forEach(function (a) { all.push({ alarm: a, state: states[bed] }); });
    });
    var rank = { high: 3, medium: 2, low: 1 };
    all.sort(function (x, y) { return rank[y.alarm.priority] - rank[x.alarm.priority] || x.alarm.raised_at.localeCompare(y.alarm.raised_at); });
    var counts = { high: 0, medium: 0, low: 0 };
    var list = document.getElementById("alarm-list");
    list.innerHTML = "";
    all.forEach(function (item) {
      var a = item.alarm; counts[a.priority] += 1;
      var li = document.createElement("li"); li.className = a.priority;
      var who = item.state.patient ? item.state.patient.name : "";
      li.innerHTML = '<div class="what"></div><div class="meta"></div>';
      li.querySelector(".what").textContent = item.state.bed_name + " " + who + " · " + conditionLabel(a.condition);
      var meta = new Date(a.raised_at).toLocaleTimeString();
      if (a.tier && a.tier !== "bedside_nurse") meta += " · " + labels.escalated + " " + (labels.tiers[a.tier] || a.tier);
      if (a.latched) meta += " · " + labels.latched;
      li.querySelector(".meta").textContent = meta;
      if (!a.acknowledged) {
        var button = document.createElement("button");
        button.className = "btn secondary small"; button.type = "button"; button.textContent = labels.ack;
        button.addEventListener("click", function () { acknowledge(a.id, button); });
        li.appendChild(button);
      } else {
        var done = document.createElement("span"); done.className = "badge"; done.textContent = labels.acked; li.appendChild(done);
      }
      list.appendChild(li);
    });
    if (!all.length) list.innerHTML = '<li class="muted">' + labels.none + "</li>";
    text(document.getElementById("count-high"), String(counts.high));
    text(document.getElementById("count-medium"), String(counts.medium));
    text(document.getElementById("count-low"), String(counts.low));
    beep(counts);
  }

  function acknowledge(id, button) {
    button.disabled = true;
    fetch("/api/v1/monitoring/alarms/" + encodeURIComponent(id) + "/acknowledge", {
      method: "POST", headers: { "X-CSRF-Token": station.dataset.csrf }, credentials: "same-origin"
    }).then(function (r) { if (!r.ok) button.disabled = false; });
  }

  // Audible cue per priority (IEC 60601-1-8 style bursts), only after a user turned sound on.
  var lastBeep = 0;
  function beep(counts) {
    if (!soundOn || !audio) return;
    var unacked = { high: 0, medium: 0 };
    Object.keys(states).forEach(function (b) { states[b].alarms.forEach(function (a) { if (!a.acknowledged && unacked[a.priority] !== undefined) unacked[a.priority] += 1; }); });
    var now = Date.now();
    var priority = unacked.high ? "high" : unacked.medium ? "medium" : null;
    if (!priority || now - lastBeep < (priority === "high" ? 5000 : 15000)) return;
    lastBeep = now;
    var pulses = priority === "high" ? [0, 0.25, 0.5, 1.0, 1.25] : [0, 0.3, 0.6];
    pulses.forEach(function (t) {
      var osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = priority === "high" ? 880 : 660; gain.gain.value = 0.15;
      osc.connect(gain); gain.connect(audio.destination);
      osc.start(audio.currentTime + t); osc.stop(audio.currentTime + t + 0.15);
    });
  }
  var soundToggle = document.getElementById("sound-toggle");
  soundToggle.addEventListener("click", function () {
    soundOn = !soundOn;
    if (soundOn && !audio) audio = new (window.AudioContext || window.webkitAudioContext)();
    soundToggle.classList.toggle("on", soundOn);
    soundToggle.setAttribute("aria-pressed", String(soundOn));
    soundToggle.querySelector(".label").textContent = soundOn ? labels.sound_on : labels.sound_off;
  });

  function tickClock() {
    text(document.getElementById("station-clock"), new Date().toLocaleTimeString());
    var now = Date.now();
    document.querySelectorAll(".bedtile[data-updated]").forEach(function (tile) {
      if (now - Number(tile.dataset.updated) > 30000) tile.classList.add("stale");
    });
  }
  setInterval(tickClock, 1000); tickClock();

  Object.values(JSON.parse(document.getElementById("initial-states").textContent) || {}).forEach(render);
  var status = document.getElementById("station-status");
  var source = new EventSource("/api/v1/monitoring/wards/" + encodeURIComponent(ward) + "/stream");
  source.onopen = function () { status.textContent = labels.live; status.className = "badge green"; };
  source.onerror = function () { status.textContent = labels.reconnecting; status.className = "badge orange"; };
  source.onmessage = function (event) { render(JSON.parse(event.data)); };
})();
