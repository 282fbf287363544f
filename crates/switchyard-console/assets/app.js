// The Switchyard console: plain JavaScript, no build step, no outside URLs.
// Every string from the API goes into the page as text (textContent), never
// as markup: the only HTML put in with innerHTML is what the control plane
// renders itself (postmortems, drill reports), escaped there. The page's
// Content-Security-Policy forbids inline scripts and style attributes, so
// everything is built with createElement.
"use strict";

const S = {
  session: null, // {token, scope, csrf}
  live: null, // the latest LiveView
  liveAt: 0, // when it arrived (browser clock, ms)
  connected: false,
  source: null,
  view: "",
};

// ---------- small helpers ----------

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of kids.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function csrf() {
  if (S.session && S.session.csrf) return S.session.csrf;
  const m = document.cookie.match(/(?:^|;\s*)switchyard_csrf=([^;]*)/);
  return m ? m[1] : "";
}

// Every request carries the CSRF header: the server takes the session
// cookie only with it.
async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { status: 0, body: { error: "network", reasons: [String(e)] } };
  }
  if (r.status === 401 && path.startsWith("/ui/session")) {
    location.href = "/ui/login";
  }
  const text = await r.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch (_) {
    /* not JSON: kept as text */
  }
  return { status: r.status, body: parsed };
}

function errorText(res) {
  const b = res.body;
  if (b && typeof b === "object") {
    const parts = [b.error || "error"].concat(b.reasons || []);
    return `${res.status}: ${parts.join("; ")}`;
  }
  return `${res.status}: ${String(b).slice(0, 300)}`;
}

const canOperate = () => S.session && (S.session.scope === "operate" || S.session.scope === "admin");
const isAdmin = () => S.session && S.session.scope === "admin";

function num(x, digits) {
  return Number(x.toFixed(digits)).toString();
}
function fmtRps(x) {
  return x >= 100 ? num(x, 0) : num(x, 1);
}
function fmtRatio(x) {
  return `${(x * 100).toFixed(2)} %`;
}
function fmtMs(x) {
  return `${Math.round(x)} ms`;
}
function fmtWeight(w) {
  return num(w, 2);
}
function fmtTime(ms) {
  if (!ms) return "—";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
function fmtDuration(ms) {
  if (ms <= 0) return "0s";
  let s = Math.round(ms / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return [d && `${d}d`, h && `${h}h`, m && `${m}m`, (s || !(d || h || m)) && `${s}s`]
    .filter(Boolean)
    .join(" ");
}

// Status words and icons: never colour alone.
const BADGE = {
  ok: ["✓", "ok"],
  warn: ["▲", "warn"],
  bad: ["✕", "bad"],
  unknown: ["?", "unknown"],
  info: ["●", "info"],
};
function badge(kind, text, attrs) {
  const [icon] = BADGE[kind] || BADGE.info;
  return el("span", Object.assign({ class: `badge ${kind}` }, attrs || {}), el("span", { class: "icon", "aria-hidden": "true", text: icon }), " ", text);
}

function toast(text, kind) {
  const t = document.getElementById("toast");
  t.textContent = "";
  t.append(badge(kind || "info", text));
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    t.hidden = true;
  }, 8000);
}

// ---------- sparklines ----------

function spark(points, key, label, max) {
  const w = 72;
  const h = 18;
  const s = svg("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
  const title = svg("title", {});
  title.textContent = `${label}, last ${points.length} s`;
  s.append(title);
  if (points.length < 2) return s;
  const vals = points.map((p) => p[key]);
  const top = Math.max(max || 0, ...vals) || 1;
  const t0 = points[0].at_ms;
  const span = Math.max(points[points.length - 1].at_ms - t0, 1);
  const coords = points.map((p, i) => {
    const x = ((p.at_ms - t0) / span) * (w - 2) + 1;
    const y = h - 1 - (vals[i] / top) * (h - 2);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  s.append(svg("polyline", { points: coords.join(" "), fill: "none", "stroke-width": 1.5, class: `line ${key}` }));
  return s;
}

// ---------- live stream ----------

function connect() {
  if (S.source) S.source.close();
  const es = new EventSource("/v1/live");
  S.source = es;
  es.addEventListener("live", (e) => {
    try {
      S.live = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    S.liveAt = Date.now();
    S.connected = true;
    streamState();
    if (S.view === "overview") renderOverview();
  });
  es.onopen = () => {
    S.connected = true;
    streamState();
  };
  es.onerror = () => {
    S.connected = false;
    streamState();
    // EventSource retries by itself unless the server refused for good.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
}

function streamState() {
  const box = document.getElementById("stream");
  const st = document.getElementById("stream-state");
  const age = document.getElementById("frame-age");
  const ageMs = S.liveAt ? Date.now() - S.liveAt : null;
  const stale = ageMs !== null && ageMs > 5000;
  let state;
  let words;
  if (!S.connected) {
    state = "disconnected";
    words = "✕ Disconnected from the live stream: what you see may be out of date. Reconnecting…";
  } else if (stale) {
    state = "stale";
    words = "▲ The live stream has gone quiet: what you see may be out of date.";
  } else if (S.live) {
    state = "live";
    words = "✓ Live";
  } else {
    state = "connecting";
    words = "Connecting to the live stream…";
  }
  st.dataset.state = state;
  st.textContent = words;
  box.className = `stream ${state}`;
  age.textContent = S.live
    ? ` · frame from ${fmtTime(S.live.at_ms)}, ${(ageMs / 1000).toFixed(1)} s ago · plane ${S.live.plane.me.id}${S.live.plane.acting ? " (leader)" : ""}`
    : "";
  age.dataset.ageMs = ageMs === null ? "" : String(ageMs);
}

// Countdowns and the frame's age move every second between frames.
function tick() {
  streamState();
  for (const e of document.querySelectorAll("[data-expires]")) {
    const left = Number(e.dataset.expires) - Date.now();
    e.textContent = left > 0 ? `expires in ${fmtDuration(left)}` : "lease ran out";
  }
}

// ---------- overview ----------

function zoneFindings(frame, svc, zone) {
  return frame.findings.filter((f) => f.service === svc && f.scope === `zone:${zone}`);
}

function renderOverview() {
  const app = document.getElementById("app");
  const f = S.live;
  if (!f) {
    if (!app.querySelector("#overview")) {
      app.textContent = "";
      app.append(el("h1", { text: "Overview" }), el("p", { text: "Waiting for the first frame of the live stream…" }));
    }
    return;
  }
  // Keep focus on the same control across re-renders.
  const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  const root = el("div", { id: "overview", "data-frame-at": f.at_ms, "data-version": f.status.version });
  root.append(el("h1", { text: "Overview" }));
  const meta = el("p", { class: "muted" }, `Controls version ${f.status.version} · ${f.status.watchers} watchers`);
  root.append(meta);
  if (f.status.problem) root.append(el("p", { class: "problem", role: "alert" }, badge("bad", f.status.problem)));
  for (const svc of f.status.services) root.append(serviceSection(f, svc));
  app.textContent = "";
  app.append(root);
  tick();
  if (focusKey) {
    const again = app.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
}

function serviceSection(f, svc) {
  const name = svc.service;
  const sec = el("section", { class: "service", "data-service": name, "aria-labelledby": `svc-${name}` });
  const head = el("div", { class: "svc-head" }, el("h2", { id: `svc-${name}`, text: name }));
  const modes = el("div", { class: "modes" });
  modes.append(svc.read_only ? badge("warn", "read-only", { "data-testid": "svc-read-only" }) : badge("ok", "read-write"));
  modes.append(svc.shed_level > 0 ? badge("warn", `shed level ${svc.shed_level}`) : badge("ok", "shed level 0"));
  const out = svc.regions.filter((r) => r.state === "out").map((r) => r.region);
  if (out.length) modes.append(badge("warn", `failed over: ${out.join(", ")} out`, { "data-testid": "failover" }));
  head.append(modes);
  if (canOperate()) head.append(serviceActions(svc));
  sec.append(head);

  const grid = el("div", { class: "grid" });
  for (const r of svc.regions) grid.append(regionRow(f, name, r));
  sec.append(grid);

  const placed = new Set();
  for (const r of svc.regions) {
    placed.add(`region:${r.region}`);
    for (const z of r.zones) placed.add(`zone:${z.zone}`);
  }
  const other = f.findings.filter((x) => x.service === name && !placed.has(x.scope));
  if (other.length) {
    sec.append(el("h3", { text: "Other open findings" }), findingList(other));
  }
  const mits = f.mitigations.filter((m) => m.scope);
  if (mits.length) {
    sec.append(
      el("h3", { text: "Mitigations in progress" }),
      el(
        "ul",
        { class: "plain" },
        mits.map((m) =>
          el("li", { "data-mitigation": m.scope }, badge("info", `${m.scope}: step ${m.step}`), m.open.length ? ` · open: ${m.open.join(", ")}` : " · findings closed", m.zones && m.zones.length ? ` · zones shifted: ${m.zones.join(", ")}` : "", m.canary_since_ms ? ` · canary since ${fmtTime(m.canary_since_ms)}` : "")
        )
      )
    );
  }
  return sec;
}

function findingList(list) {
  return el(
    "ul",
    { class: "findings" },
    list.map((x) =>
      el("li", { "data-finding": `${x.scope} ${x.kind}` }, badge("bad", `${x.kind}`), ` ${x.scope} since ${fmtTime(x.start_ms)}`)
    )
  );
}

function regionRow(f, svc, r) {
  const row = el("div", { class: `region ${r.state}`, "data-region": `${svc}/${r.region}` });
  const head = el("div", { class: "region-head" }, el("h3", { text: r.region }));
  const st = r.state === "in" ? badge("ok", `in · weight ${fmtWeight(r.weight)}`) : badge("bad", `out · weight ${fmtWeight(r.weight)}`);
  st.dataset.testid = "region-state";
  head.append(st);
  if (r.failover) head.append(badge("warn", "failover mode: serves misrouted requests locally"));
  if (r.read_only) head.append(badge("warn", "read-only"));
  head.append(el("span", { class: "muted" }, ` floor ${r.floor}`));
  const rf = f.findings.filter((x) => x.service === svc && x.scope === `region:${r.region}`);
  if (rf.length) head.append(findingList(rf));
  if (canOperate()) {
    head.append(
      el("button", {
        type: "button",
        class: "small",
        "data-action": "read-only-region",
        "data-key": `ro/${svc}/${r.region}`,
        text: r.read_only ? "Read-only off…" : "Read-only on…",
        onclick: () =>
          openAction({
            title: `Read-only ${r.read_only ? "off" : "on"}: ${svc} in ${r.region}`,
            build: () => ({ op: "read_only", service: svc, region: r.region, on: !r.read_only }),
          }),
      })
    );
  }
  row.append(head);
  const zones = el("div", { class: "zones" });
  for (const z of r.zones) zones.append(zoneCell(f, svc, r, z));
  row.append(zones);
  return row;
}

function zoneCell(f, svc, r, z) {
  const t = f.traffic.find((x) => x.service === svc && x.zone === z.zone);
  const edge = f.edges.find((e) => e.zone === z.zone);
  const fs = zoneFindings(f, svc, z.zone);
  const shifted = z.weight < 1;
  let health;
  if (shifted && z.weight === 0) health = ["warn", "shifted away"];
  else if (shifted) health = ["warn", `canary ${num(z.weight * 100, 1)} %`];
  else if (fs.length) health = ["bad", "impaired"];
  else if (!t || !t.recent) health = ["unknown", "unknown: no traffic"];
  else if (t.recent.error_ratio >= 0.01) health = ["bad", "errors"];
  else health = ["ok", "healthy"];

  const cell = el("article", {
    class: `zone ${health[0]}`,
    "data-zone": `${svc}/${z.zone}`,
    "data-weight": z.weight,
    "aria-label": `${svc} zone ${z.zone}: ${health[1]}`,
  });
  cell.append(el("h4", { text: z.zone }), badge(health[0], health[1], { "data-testid": "zone-health" }));
  const facts = el("dl", { class: "facts" });
  const fact = (k, v, attrs) => facts.append(el("dt", { text: k }), el("dd", attrs || {}, v));
  fact("weight", fmtWeight(z.weight), { "data-testid": "weight" });
  if (z.shift_expires_at_ms) {
    fact("shift", el("span", { "data-expires": z.shift_expires_at_ms, "data-testid": "expiry" }));
  }
  if (z.shift_reason) fact("why", z.shift_reason, { "data-testid": "shift-reason" });
  fact("instances", String(z.instances));
  const recent = t && t.recent;
  const points = (t && t.points) || [];
  const tattrs = (m, v) => ({ "data-metric": m, "data-value": v === undefined ? "" : v });
  if (recent) {
    cell.dataset.recentAt = recent.at_ms;
    fact("rps", el("span", tattrs("rps", recent.rps), fmtRps(recent.rps)), {});
    fact("errors", el("span", tattrs("error_ratio", recent.error_ratio), fmtRatio(recent.error_ratio)));
    fact("p99", el("span", tattrs("p99_ms", recent.p99_ms), fmtMs(recent.p99_ms)));
  } else {
    fact("rps", el("span", tattrs("rps"), "unknown"));
    fact("errors", el("span", tattrs("error_ratio"), "unknown"));
    fact("p99", el("span", tattrs("p99_ms"), "unknown"));
  }
  cell.append(facts);
  cell.append(
    el(
      "div",
      { class: "sparks" },
      el("span", { class: "spark-label" }, "rps ", spark(points, "rps", "requests per second")),
      el("span", { class: "spark-label" }, "err ", spark(points, "error_ratio", "error ratio", 0.05)),
      el("span", { class: "spark-label" }, "p99 ", spark(points, "p99_ms", "p99 latency"))
    )
  );
  if (fs.length) cell.append(findingList(fs));
  if (edge) {
    const hk = { up: "ok", silent: "bad", unknown: "unknown" }[edge.health] || "unknown";
    const e = el("p", { class: "edge", "data-testid": "edge", "data-edge-health": edge.health }, badge(hk, `edge ${edge.health}`));
    if (edge.config_version) {
      e.append(" · config ", el("code", { title: edge.config_version, "data-testid": "config-version", text: edge.config_version.slice(0, 12) }));
    }
    if (edge.config_refused) e.append(" ", badge("bad", `refused a config: ${edge.config_refused}`));
    cell.append(e);
  }
  if (canOperate()) {
    const act = el("div", { class: "actions" });
    if (shifted) {
      act.append(
        el("button", {
          type: "button",
          "data-action": "unshift",
          "data-key": `unshift/${svc}/${z.zone}`,
          text: "End shift…",
          onclick: () =>
            openAction({
              title: `End the shift of ${svc} away from ${z.zone}`,
              build: () => ({ op: "unshift", service: svc, zone: z.zone }),
            }),
        })
      );
    } else {
      act.append(
        el("button", {
          type: "button",
          "data-action": "shift",
          "data-key": `shift/${svc}/${z.zone}`,
          text: "Shift away…",
          onclick: () =>
            openAction({
              title: `Shift ${svc} away from ${z.zone}`,
              fields: [{ name: "for", label: "For (a lease: 90s, 30m, 1h, 2h30m)", kind: "text", value: "30m" }],
              build: (v) => ({ op: "shift", service: svc, zone: z.zone, for: v.for }),
            }),
        })
      );
    }
    cell.append(act);
  }
  return cell;
}

function serviceActions(svc) {
  const name = svc.service;
  const regions = svc.regions.map((r) => r.region);
  const failedOver = svc.regions.some((r) => r.state === "out" || r.weight < 1);
  const box = el("div", { class: "actions" });
  const btn = (action, text, spec) =>
    el("button", { type: "button", "data-action": action, "data-key": `${action}/${name}`, text, onclick: () => openAction(spec) });
  box.append(
    btn("failover", "Fail over…", {
      title: `Fail ${name} over to one region`,
      fields: [{ name: "to", label: "To region", kind: "select", options: regions }],
      build: (v) => ({ op: "failover", service: name, to: v.to }),
    })
  );
  if (failedOver) {
    box.append(btn("failback", "Fail back…", { title: `Fail ${name} back: every region in`, build: () => ({ op: "failback", service: name }) }));
  }
  box.append(
    btn("read-only", svc.read_only ? "Read-only off…" : "Read-only on…", {
      title: `Read-only ${svc.read_only ? "off" : "on"} for all of ${name}`,
      build: () => ({ op: "read_only", service: name, on: !svc.read_only }),
    })
  );
  box.append(
    btn("shed", "Shed level…", {
      title: `Shed level for ${name} (now ${svc.shed_level})`,
      fields: [
        {
          name: "level",
          label: "Level",
          kind: "select",
          options: ["0", "1", "2"],
          labels: ["0: shed only above the limits", "1: shed every sheddable request", "2: shed normal requests too"],
          value: String(svc.shed_level),
        },
      ],
      build: (v) => ({ op: "shed_level", service: name, level: Number(v.level) }),
    })
  );
  return box;
}

// ---------- the action dialog: preview, then confirm ----------

let current = null; // {spec, previewed: bool}

function openAction(spec) {
  const dlg = document.getElementById("action");
  const a = document.activeElement;
  current = { spec, previewed: false, opener: a && a.dataset ? a.dataset.key : null };
  document.getElementById("action-title").textContent = spec.title;
  document.getElementById("action-what").textContent = "Preview first: it shows the capacity after the change, every safety rule's verdict and the DNS answers that would change. Nothing changes until you confirm.";
  const fields = document.getElementById("action-fields");
  fields.textContent = "";
  for (const f of spec.fields || []) {
    let input;
    if (f.kind === "select") {
      input = el("select", { name: f.name, id: `action-${f.name}` });
      f.options.forEach((o, i) => input.append(el("option", { value: o, text: f.labels ? f.labels[i] : o, selected: f.value === o })));
    } else {
      input = el("input", { name: f.name, id: `action-${f.name}`, type: "text", value: f.value || "", required: true, autocomplete: "off" });
    }
    input.addEventListener("input", invalidate);
    input.addEventListener("change", invalidate);
    fields.append(el("label", { class: "field", for: `action-${f.name}` }, f.label), input);
  }
  const reason = document.getElementById("action-reason");
  reason.value = "";
  const force = document.getElementById("action-force");
  force.checked = false;
  force.disabled = !isAdmin();
  document.getElementById("force-why").textContent = isAdmin() ? "" : `(your token ${S.session.token} is ${S.session.scope})`;
  document.getElementById("action-result").textContent = "";
  document.getElementById("action-confirm").disabled = true;
  dlg.showModal();
  const first = fields.querySelector("input, select");
  (first || reason).focus();
}

function invalidate() {
  if (!current) return;
  current.previewed = false;
  document.getElementById("action-confirm").disabled = !document.getElementById("action-force").checked;
}

function values() {
  const out = {};
  for (const f of (current && current.spec.fields) || []) out[f.name] = document.getElementById(`action-${f.name}`).value.trim();
  return out;
}

function request(preview) {
  const reason = document.getElementById("action-reason").value.trim();
  const req = { op: current.spec.build(values()), reason };
  if (document.getElementById("action-force").checked) req.force = true;
  if (preview) req.preview = true;
  return req;
}

function needReason() {
  const r = document.getElementById("action-reason");
  if (!r.value.trim()) {
    const out = document.getElementById("action-result");
    out.textContent = "";
    out.append(el("p", { class: "error", role: "alert" }, badge("bad", "reason: say why (it goes into the audit log and to the edges)")));
    r.focus();
    return true;
  }
  return false;
}

function ruleList(rules) {
  return el(
    "ul",
    { class: "rules", "data-testid": "rules" },
    rules.map((r) =>
      el(
        "li",
        { "data-rule": r.rule, "data-passed": String(r.passed) },
        r.passed ? badge("ok", "passed") : badge("bad", "refused"),
        " ",
        el("strong", { text: r.rule }),
        ": ",
        el("span", { class: "message", text: r.message })
      )
    )
  );
}

function dnsTable(moves) {
  const t = el("table", { class: "dns", "data-testid": "dns" });
  t.append(el("thead", {}, el("tr", {}, ["names", "clients from", "answers before", "after", "dropped"].map((h) => el("th", { scope: "col", text: h })))));
  const body = el("tbody");
  for (const m of moves) {
    body.append(
      el(
        "tr",
        {},
        el("td", { text: m.names.join(", ") }),
        el("td", { text: m.client_region || "elsewhere (and outside zones)" }),
        el("td", { text: m.before.join(", ") || "none" }),
        el("td", { text: m.after.join(", ") || "none" }),
        el("td", { text: m.dropped.join(", ") || "—" })
      )
    );
  }
  t.append(body);
  return t;
}

async function preview() {
  if (!current || needReason()) return;
  const out = document.getElementById("action-result");
  out.textContent = "Asking for a preview…";
  const res = await api("POST", "/v1/ops", request(true));
  out.textContent = "";
  if (res.status !== 200) {
    out.append(el("p", { class: "error", role: "alert" }, badge("bad", errorText(res))));
    if (res.body && res.body.rules) out.append(ruleList(res.body.rules.map((r) => ({ rule: r.rule, passed: false, message: r.message }))));
    return;
  }
  const p = res.body;
  out.dataset.allowed = String(p.allowed);
  out.append(
    el("h3", { text: "Preview" }),
    el(
      "p",
      { class: "verdict", "data-testid": "verdict" },
      p.allowed ? badge("ok", "allowed by every safety rule") : badge("bad", `refused by ${p.refusals.map((r) => r.rule).join(", ")}`)
    ),
    el(
      "p",
      { "data-testid": "capacity" },
      "Capacity after: ",
      el("strong", { "data-testid": "capacity-after", "data-value": p.capacity_after, text: `${(p.capacity_after * 100).toFixed(1)} %` }),
      ` (${p.serving_instances_after} of ${p.total_instances} instances serving)`
    )
  );
  out.append(el("h4", { text: "Safety rules" }));
  if (p.rules) {
    out.append(p.rules.length ? ruleList(p.rules) : el("p", { text: "No rule applies to this operation." }));
  } else {
    // A plane that sends only the refusals: say so rather than imply
    // that no rule was asked.
    out.append(
      p.refusals.length
        ? ruleList(p.refusals.map((r) => ({ rule: r.rule, passed: false, message: r.message })))
        : el("p", { "data-testid": "rules-passed", text: "Every rule passed (this plane sends only refusals, not each rule's numbers)." })
    );
  }
  if (!p.allowed && p.refusals.length) {
    out.append(el("h4", { text: "Refused by" }), ruleList(p.refusals.map((r) => ({ rule: r.rule, passed: false, message: r.message }))));
  }
  out.append(el("h4", { text: "DNS answers that would change" }), p.dns && p.dns.length ? dnsTable(p.dns) : el("p", { "data-testid": "dns-none", text: "None." }));
  current.previewed = true;
  const force = document.getElementById("action-force").checked;
  const confirm = document.getElementById("action-confirm");
  confirm.disabled = !(p.allowed || force);
  confirm.textContent = p.allowed ? "Confirm" : force ? "Confirm with force" : "Confirm (refused)";
  if (!confirm.disabled) confirm.focus();
}

async function confirmAction() {
  if (!current || needReason()) return;
  const out = document.getElementById("action-result");
  const req = request(false);
  const res = await api("POST", "/v1/ops", req);
  if (res.status === 200) {
    const a = res.body;
    document.getElementById("action").close();
    toast(a.changed === false ? `Nothing to change: the controls already say so (version ${a.version}).` : `Applied: ${current.spec.title} (version ${a.version}).`, "ok");
    return;
  }
  const box = el("div", { class: "refusal", role: "alert", "data-testid": "refusal" }, el("p", {}, badge("bad", errorText(res))));
  if (res.body && res.body.rules && res.body.rules.length) {
    box.append(el("h4", { text: "Refused by" }), ruleList(res.body.rules.map((r) => ({ rule: r.rule, passed: false, message: r.message }))));
  }
  out.prepend(box);
  document.getElementById("action-confirm").disabled = true;
}

// ---------- incidents ----------

const STAGES = ["occurred", "detected", "notified", "acknowledged", "mitigated", "recovered", "analysed", "shared", "reviewed"];
const PEOPLE_STAGES = ["analysed", "shared", "reviewed"];

function sevBadge(sev) {
  const k = sev === "SEV1" || sev === "SEV2" ? "bad" : sev === "SEV3" ? "warn" : "info";
  return badge(k, sev);
}
function statusBadge(st) {
  const k = st === "resolved" ? "ok" : st === "monitoring" ? "info" : "warn";
  return badge(k, st);
}

async function renderIncidents() {
  const app = document.getElementById("app");
  const res = await api("GET", "/v1/incidents");
  if (S.view !== "incidents") return;
  app.textContent = "";
  app.append(el("h1", { text: "Incidents" }));
  if (res.status !== 200) {
    app.append(el("p", { class: "error", role: "alert", text: errorText(res) }));
    return;
  }
  const list = res.body.incidents.slice().sort((a, b) => b.updated_ms - a.updated_ms);
  const open = list.filter((i) => i.status !== "resolved");
  const recent = list.filter((i) => i.status === "resolved").slice(0, 50);
  app.append(el("h2", { text: `Open (${open.length})` }), incidentTable(open, "incidents-open"));
  app.append(el("h2", { text: `Recently resolved (${recent.length})` }), incidentTable(recent, "incidents-resolved"));
}

function incidentTable(list, id) {
  if (!list.length) return el("p", { id, class: "muted", text: "None." });
  const t = el("table", { id, class: "list" });
  t.append(el("thead", {}, el("tr", {}, ["incident", "service", "severity", "status", "where", "opened", "updated"].map((h) => el("th", { scope: "col", text: h })))));
  const body = el("tbody");
  for (const i of list) {
    body.append(
      el(
        "tr",
        { "data-incident": i.id },
        el("td", {}, el("a", { href: `#/incidents/${encodeURIComponent(i.id)}`, text: `${i.id}: ${i.title}` })),
        el("td", { text: i.service }),
        el("td", {}, sevBadge(i.severity)),
        el("td", {}, statusBadge(i.status)),
        el("td", { text: i.scopes.join(", ") || "—" }),
        el("td", { text: `${fmtTime(i.created_ms)} by ${i.opened_by}` }),
        el("td", { text: fmtTime(i.updated_ms) })
      )
    );
  }
  t.append(body);
  return t;
}

async function renderIncident(id) {
  const app = document.getElementById("app");
  const res = await api("GET", `/v1/incidents/${encodeURIComponent(id)}`);
  if (S.view !== `incident/${id}`) return;
  app.textContent = "";
  app.append(el("p", {}, el("a", { href: "#/incidents", text: "← All incidents" })));
  if (res.status !== 200) {
    app.append(el("h1", { text: `Incident ${id}` }), el("p", { class: "error", role: "alert", text: errorText(res) }));
    return;
  }
  const i = res.body;
  const root = el("div", { id: "incident", "data-incident": i.id });
  root.append(el("h1", { text: `${i.id}: ${i.title}` }));
  root.append(
    el(
      "p",
      { class: "modes" },
      sevBadge(i.severity),
      " ",
      statusBadge(i.status),
      ` ${i.service} · ${i.scopes.join(", ") || "no place named"} · opened by ${i.opened_by} at ${fmtTime(i.created_ms)}`
    ),
    el("p", { class: "muted", text: `Severity: ${i.severity_reason}${i.severity_pinned ? " (pinned by a person)" : ""}` }),
    el(
      "p",
      { "data-testid": "impact" },
      `Impact: ${(i.impact.traffic_share * 100).toFixed(1)} % of traffic, ${i.impact.failed} of ${i.impact.requests} requests failed, ${(i.impact.budget_burned * 100).toFixed(2)} % of the month's error budget`
    )
  );

  const stages = el("ol", { class: "stages", "data-testid": "stages" });
  for (const s of STAGES) {
    const at = i.stages[s];
    stages.append(el("li", { "data-stage": s, class: at ? "reached" : "" }, at ? badge("ok", s) : badge("unknown", s), ` ${at ? fmtTime(at) : "not yet"}`));
  }
  root.append(el("h2", { text: "Stages" }), stages);

  if (canOperate()) root.append(incidentActions(i));

  const tl = el("ol", { class: "timeline", "data-testid": "timeline" });
  for (const e of i.timeline) {
    tl.append(el("li", { "data-kind": e.kind }, el("time", { text: fmtTime(e.at_ms) }), " ", el("span", { class: "kind", text: e.kind.replace(/_/g, " ") }), " ", el("span", { class: "tl-who", text: e.who }), ": ", el("span", { text: e.text })));
  }
  root.append(el("h2", { text: "Timeline" }), tl);
  const notes = i.timeline.filter((e) => e.kind === "note");
  root.append(
    el("h2", { text: `Notes (${notes.length})` }),
    notes.length
      ? el("ul", { class: "notes", "data-testid": "notes" }, notes.map((n) => el("li", {}, el("strong", { text: n.who }), ` ${fmtTime(n.at_ms)}: `, el("span", { text: n.text }))))
      : el("p", { class: "muted", text: "No notes yet." })
  );

  const pm = el("div", { id: "postmortem", class: "fragment", "data-testid": "postmortem" }, "Loading the postmortem…");
  root.append(el("h2", { text: "Postmortem" }), pm);
  app.append(root);
  const r = await fetch(`/ui/incidents/${encodeURIComponent(i.id)}/postmortem`, { headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" });
  if (r.ok) {
    // Rendered and escaped by the control plane (raw HTML in the Markdown
    // is escaped there), so it may go in as markup.
    pm.innerHTML = await r.text();
  } else {
    pm.textContent = r.status === 404 ? "No postmortem yet." : `Could not load the postmortem (${r.status}).`;
  }
}

function incidentActions(i) {
  const box = el("section", { class: "incident-actions", "aria-label": "Act on this incident" });
  const msg = el("p", { class: "result", role: "status", "data-testid": "incident-result" });
  const after = async (res, what) => {
    if (res.status === 200) {
      toast(`${what}: done`, "ok");
      renderIncident(i.id);
    } else {
      msg.textContent = "";
      msg.append(badge("bad", `${what}: ${errorText(res)}`));
    }
  };
  const path = (p) => `/v1/incidents/${encodeURIComponent(i.id)}/${p}`;
  if (!i.stages.acknowledged) {
    box.append(el("button", { type: "button", id: "ack", "data-action": "ack", text: "Acknowledge", onclick: async () => after(await api("POST", path("ack"), {}), "Acknowledge") }));
  }
  const sel = el("select", { id: "stage", name: "stage" }, PEOPLE_STAGES.map((s) => el("option", { value: s, text: s })));
  const stageNote = el("input", { id: "stage-note", type: "text", placeholder: "note (optional)", autocomplete: "off" });
  box.append(
    el(
      "form",
      {
        class: "inline",
        onsubmit: async (e) => {
          e.preventDefault();
          after(await api("POST", path("stage"), { stage: sel.value, note: stageNote.value }), `Stage ${sel.value}`);
        },
      },
      el("label", { for: "stage", text: "Stage reached " }),
      sel,
      " ",
      stageNote,
      " ",
      el("button", { type: "submit", "data-action": "stage", text: "Record stage" })
    )
  );
  const note = el("textarea", { id: "note", rows: 2, maxlength: 4096 });
  box.append(
    el(
      "form",
      {
        class: "inline",
        onsubmit: async (e) => {
          e.preventDefault();
          if (!note.value.trim()) {
            msg.textContent = "text: write the note first";
            return;
          }
          after(await api("POST", path("note"), { text: note.value }), "Note");
        },
      },
      el("label", { for: "note", text: "Add a note " }),
      note,
      " ",
      el("button", { type: "submit", "data-action": "note", text: "Add note" })
    )
  );
  box.append(msg);
  return box;
}

// ---------- history ----------

function actorText(a) {
  if (typeof a === "string") return a;
  switch (a.kind) {
    case "person":
      return a.name;
    case "playbook":
      return a.name === "playbook" ? "playbook" : `playbook ${a.name}`;
    case "rollout":
      return `rollout ${a.id}`;
    case "drill":
      return `drill ${a.name} (${a.token})`;
    default:
      return JSON.stringify(a);
  }
}
function actorName(a) {
  if (typeof a === "string") return a;
  return a.kind === "rollout" ? a.id : a.name;
}
function entryService(e) {
  const op = e.op || {};
  return op.service || (op.fault && op.fault.service) || "";
}

async function renderHistory() {
  const app = document.getElementById("app");
  const [h, ro, dr] = await Promise.all([api("GET", "/v1/history?limit=500"), api("GET", "/v1/rollouts"), api("GET", "/ui/drills")]);
  if (S.view !== "history") return;
  app.textContent = "";
  app.append(el("h1", { text: "History" }));

  // Audit log: the plane filters (by service, actor kind or name, and
  // kind of entry) among its newest 10,000 entries.
  const sec = el("section", { "aria-labelledby": "audit-h" }, el("h2", { id: "audit-h", text: "Audit log" }));
  app.append(sec);
  if (h.status !== 200) {
    sec.append(el("p", { class: "error", role: "alert", text: errorText(h) }));
  } else {
    const seen = h.body.entries;
    const uniq = (xs) => [...new Set(xs.filter(Boolean))].sort();
    const services = uniq(seen.map(entryService).concat(S.live ? S.live.status.services.map((x) => x.service) : []));
    const actors = ["person", "playbook", "drill", "rollout"].concat(uniq(seen.map((e) => actorName(e.actor))));
    const kinds = ["change", "recommendation", "verification", "dns_push", "rollout"];
    const pick = (id, label, opts) =>
      el("label", { for: id }, `${label} `, el("select", { id }, el("option", { value: "", text: "all" }), opts.map((o) => el("option", { value: o, text: o }))));
    const filters = el("div", { class: "filters" }, pick("f-service", "Service", services), pick("f-actor", "Actor", actors), pick("f-kind", "Kind", kinds));
    const table = el("table", { class: "list", id: "audit" });
    const count = el("p", { id: "audit-count", class: "muted", role: "status" });
    const draw = async () => {
      const q = new URLSearchParams({ limit: "500" });
      for (const [id, key] of [
        ["f-service", "service"],
        ["f-actor", "actor"],
        ["f-kind", "kind"],
      ]) {
        const v = document.getElementById(id).value;
        if (v) q.set(key, v);
      }
      const res = await api("GET", `/v1/history?${q}`);
      table.textContent = "";
      if (res.status !== 200) {
        count.textContent = errorText(res);
        return;
      }
      const rows = res.body.entries.slice().reverse();
      table.append(el("thead", {}, el("tr", {}, ["when", "actor", "kind", "action", "reason", "outcome"].map((x) => el("th", { scope: "col", text: x })))));
      const body = el("tbody");
      for (const e of rows) {
        const outcome = e.accepted ? badge("ok", e.version ? `accepted · v${e.version}` : "accepted") : e.rule ? badge("bad", `refused: ${e.rule}`) : badge("info", "noted");
        body.append(
          el("tr", { "data-kind": e.kind || "change" }, el("td", { text: fmtTime(e.at_ms) }), el("td", { text: actorText(e.actor) }), el("td", { text: e.kind || "change" }), el("td", { text: e.action }), el("td", { text: e.reason }), el("td", {}, outcome))
        );
      }
      table.append(body);
      count.textContent = `${rows.length} ${rows.length === 1 ? "entry" : "entries"}, newest first`;
    };
    sec.append(filters, count, table);
    for (const id of ["f-service", "f-actor", "f-kind"]) document.getElementById(id).addEventListener("change", draw);
    await draw();
  }

  // Rollouts.
  const rs = el("section", { "aria-labelledby": "ro-h" }, el("h2", { id: "ro-h", text: "Config rollouts" }));
  if (ro.status !== 200) rs.append(el("p", { class: "error", text: errorText(ro) }));
  else if (!ro.body.rollouts.length) rs.append(el("p", { class: "muted", text: "No rollout yet." }));
  else for (const r of ro.body.rollouts) rs.append(rolloutCard(r));
  app.append(rs);

  // Drill reports.
  const ds = el("section", { "aria-labelledby": "dr-h" }, el("h2", { id: "dr-h", text: "Drill reports" }));
  const frag = el("div", { id: "drill-report", class: "fragment" });
  if (dr.status !== 200) ds.append(el("p", { class: "error", text: errorText(dr) }));
  else if (!dr.body.length) ds.append(el("p", { class: "muted", text: "No drill report here." }));
  else {
    ds.append(
      el(
        "ul",
        { class: "plain drills" },
        dr.body.map((d) =>
          el(
            "li",
            {},
            el("button", {
              type: "button",
              class: "link",
              "data-drill": d.name,
              text: d.title || d.name,
              onclick: async () => {
                frag.textContent = "Loading…";
                const r = await fetch(`/ui/drills/${encodeURIComponent(d.name)}`, { headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" });
                // The control plane renders and escapes the report.
                if (r.ok) frag.innerHTML = await r.text();
                else frag.textContent = `Could not load ${d.name} (${r.status}).`;
                frag.focus();
              },
            })
          )
        )
      )
    );
  }
  frag.tabIndex = -1;
  ds.append(frag);
  app.append(ds);
}

function rolloutCard(r) {
  const k = { succeeded: "ok", running: "info", paused: "warn", rolled_back: "bad", aborted: "bad" }[r.state] || "info";
  const card = el("article", { class: "rollout", "data-rollout": r.id });
  card.append(el("h3", {}, `${r.id} `, badge(k, r.state.replace("_", " "))), el("p", { class: "muted", text: `${r.from} → ${r.to} · by ${r.by} · ${fmtTime(r.created_ms)} · ${r.reason}` }));
  const waves = el("ol", { class: "waves" });
  r.waves.forEach((w, n) => {
    const vs = r.verdicts.filter((v) => v.wave === n);
    const last = vs[vs.length - 1];
    const vk = last ? { pass: "ok", fail: "bad", wait: "warn" }[last.verdict] : n < r.wave ? "ok" : n === r.wave && !["succeeded"].includes(r.state) ? "info" : "unknown";
    const vt = last ? last.verdict : n === r.wave && r.state === "running" ? "in progress" : "not yet";
    waves.append(el("li", { "data-wave": n }, badge(vk, vt), ` ${w.name} (${w.members.join(", ")})`, last ? el("div", { class: "muted", text: `${last.reason} — against ${last.baseline}` }) : ""));
  });
  card.append(waves);
  if (r.waiting_for) card.append(el("p", { text: `Waiting for: ${r.waiting_for}` }));
  return card;
}

// ---------- routing and start ----------

function route() {
  const h = location.hash.replace(/^#\/?/, "") || "overview";
  const [view, id] = h.split("/");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const app = document.getElementById("app");
  if (view === "incidents" && id) {
    S.view = `incident/${decodeURIComponent(id)}`;
    app.textContent = "Loading…";
    renderIncident(decodeURIComponent(id));
  } else if (view === "incidents") {
    S.view = "incidents";
    app.textContent = "Loading…";
    renderIncidents();
  } else if (view === "history") {
    S.view = "history";
    app.textContent = "Loading…";
    renderHistory();
  } else {
    S.view = "overview";
    app.textContent = "";
    renderOverview();
  }
}

async function start() {
  const res = await api("GET", "/ui/session");
  if (res.status !== 200) {
    location.href = "/ui/login";
    return;
  }
  S.session = res.body;
  document.body.dataset.scope = S.session.scope;
  const who = document.getElementById("session");
  who.textContent = "";
  who.append(`${S.session.token} · `, badge(S.session.scope === "read" ? "info" : "warn", S.session.scope, { "data-testid": "scope" }));
  if (!canOperate()) who.append(el("span", { class: "muted", text: " (read only: no actions)" }));
  document.getElementById("logout").addEventListener("click", async () => {
    await api("POST", "/ui/logout");
    location.href = "/ui/login";
  });
  document.getElementById("action-preview").addEventListener("click", preview);
  // Enter in a field previews; it never confirms nor closes the dialog.
  document.getElementById("action-form").addEventListener("submit", (e) => {
    e.preventDefault();
    preview();
  });
  document.getElementById("action-confirm").addEventListener("click", confirmAction);
  document.getElementById("action-cancel").addEventListener("click", () => document.getElementById("action").close());
  document.getElementById("action-force").addEventListener("change", () => {
    const c = document.getElementById("action-confirm");
    c.disabled = !(current && current.previewed && document.getElementById("action-result").dataset.allowed === "true") && !document.getElementById("action-force").checked;
  });
  document.getElementById("action").addEventListener("close", () => {
    // The overview is redrawn every second: find the button again by its key.
    const back = current && current.opener && document.querySelector(`[data-key="${CSS.escape(current.opener)}"]`);
    if (back) back.focus();
    current = null;
  });
  window.addEventListener("hashchange", route);
  connect();
  setInterval(tick, 1000);
  route();
}

start();
