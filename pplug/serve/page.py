"""`GET /ui`: the page for the person behind a user id, served by `pplug serve` (plain HTML and a little
JavaScript, no build step, nothing fetched from elsewhere).

The page holds no data: it is the same static text for everyone. Signed in with a key (kept in the tab's
memory only, never stored), it calls the API with that key in the `Authorization` header: `GET /v1/whoami`,
then for the key's user (the admin key: any user id typed in) `GET /v1/users/{id}` (persona),
`GET /v1/users/{id}/history` (items and privacy mode), `POST /v1/explain` (a prompt's explanation: the weight
of each history item, the output with and without the history) and, after a confirmation, `DELETE
/v1/users/{id}` (erasure). Every refusal is the API's own reply, shown as its one-line message.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>pplug: your personalization</title>
<style>
 body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 section { border-top: 1px solid #ddd; padding: .5rem 0 1rem; }
 .hidden { display: none; }
 .error { color: #a00; font-weight: 600; }
 table { border-collapse: collapse; width: 100%; }
 td, th { text-align: left; padding: .2rem .4rem; border-bottom: 1px solid #eee; vertical-align: top; }
 .bar { display: inline-block; height: .8rem; background: #4a7bd0; }
 pre { white-space: pre-wrap; background: #f6f6f6; padding: .5rem; }
 textarea, input[type=text], input[type=password] { width: 100%; box-sizing: border-box; }
</style>
</head>
<body>
<h1>Your personalization</h1>
<p>What this server keeps about you, why it answers you the way it does, and erasure. Your key stays in this tab.</p>
<section id="login">
 <label for="key">API key</label> <input id="key" type="password" autocomplete="off">
 <button id="signin">Sign in</button>
 <p id="login-error" class="error"></p>
</section>
<section id="pick" class="hidden">
 <p>Signed in with the admin key: any user.</p>
 <label for="user-id">User id</label> <input id="user-id" type="text"> <button id="open">Open</button>
</section>
<div id="account" class="hidden">
 <section>
  <h2>User <span id="who"></span></h2>
  <p id="privacy"></p>
  <h3>Persona</h3><pre id="persona"></pre>
  <h3>History (<span id="history-count">0</span> items)</h3>
  <table><thead><tr><th>#</th><th>stored</th><th>item</th></tr></thead><tbody id="history"></tbody></table>
 </section>
 <section>
  <h2>Try a prompt</h2>
  <textarea id="prompt" rows="3"></textarea>
  <button id="explain">Explain</button>
  <div id="explanation" class="hidden">
   <p id="summary"></p>
   <table><thead><tr><th>output</th><th>with your history</th><th>with no history</th><th>with your persona alone</th>
   </tr></thead><tbody id="outputs"></tbody></table>
   <h3>How much each history item counted</h3>
   <table><thead><tr><th>#</th><th>weight</th><th></th><th>label</th><th>item</th></tr></thead>
   <tbody id="weights"></tbody></table>
  </div>
 </section>
 <section>
  <h2>Erasure</h2>
  <button id="erase">Erase this user</button>
  <div id="confirm" class="hidden">
   <p>This deletes the user, the persona, every history item, the key and the cached embeddings. It cannot be undone.</p>
   <button id="erase-yes">Yes, erase everything</button> <button id="erase-no">Cancel</button>
  </div>
 </section>
</div>
<p id="erased"></p>
<p id="error" class="error"></p>
<script>
"use strict";
let key = null, user = null, model = null;
const $ = (id) => document.getElementById(id);
function text(el, s) { el.textContent = s == null ? "" : String(s); }
function cell(row, s) { const td = document.createElement("td"); text(td, s); row.appendChild(td); return td; }
async function api(method, path, body) {
  const r = await fetch(path, {method, headers: Object.assign({"Authorization": "Bearer " + key},
    body ? {"Content-Type": "application/json"} : {}), body: body ? JSON.stringify(body) : undefined});
  const doc = await r.json().catch(() => ({error: {message: "HTTP " + r.status}}));
  if (!r.ok) { throw new Error((doc.error && doc.error.message) || ("HTTP " + r.status)); }
  return doc;
}
function fail(where, e) { text($(where), e.message); }
$("signin").onclick = async () => {
  key = $("key").value.trim(); text($("login-error"), ""); text($("error"), "");
  $("account").classList.add("hidden"); $("pick").classList.add("hidden");
  try {
    const me = await api("GET", "/v1/whoami");
    model = me.model;
    if (me.admin) { $("pick").classList.remove("hidden"); } else { await openUser(me.user_id); }
  } catch (e) { fail("login-error", e); }
};
$("open").onclick = () => openUser($("user-id").value.trim());
async function openUser(id) {
  text($("error"), ""); $("explanation").classList.add("hidden"); text($("erased"), "");
  try {
    const u = await api("GET", "/v1/users/" + encodeURIComponent(id));
    const h = await api("GET", "/v1/users/" + encodeURIComponent(id) + "/history?limit=1000");
    user = id; text($("who"), id);
    text($("persona"), JSON.stringify(u.persona, null, 2));
    text($("privacy"), "Privacy mode: your history is stored on this server (a stored user). " +
      (h.privacy.user_vector_accepted ? "This server also accepts privacy-mode requests, which send a vector computed on " +
       "your device instead (pplug embed-user) and keep nothing." : "This checkpoint reads each item's label, so it " +
       "serves stored users only (no privacy-mode requests)."));
    text($("history-count"), h.total);
    const body = $("history"); body.replaceChildren();
    h.data.forEach((r) => { const tr = document.createElement("tr"); cell(tr, r.id); cell(tr, r.created_at);
      cell(tr, JSON.stringify(r.item)); body.appendChild(tr); });
    $("account").classList.remove("hidden");
  } catch (e) { $("account").classList.add("hidden"); fail("error", e); }
}
function fmtProbs(c) {
  if (!c.label_probs) { return c.output; }
  const p = Object.entries(c.label_probs).map(([k, v]) => k + ": " + v.toFixed(2)).join(", ");
  return c.output + "  (" + p + ")";
}
$("explain").onclick = async () => {
  text($("error"), "");
  try {
    const e = await api("POST", "/v1/explain", {model, user, input: $("prompt").value});
    const eff = e.effective_items, att = e.attention;
    text($("summary"), e.history_items ? ("Read " + e.history_items + " history items; effective number " +
      eff.exp_entropy.toFixed(1) + " (exp of the entropy of the weights; 1/sum w\\u00b2 = " +
      eff.inverse_simpson.toFixed(1) + "); uniform weight " + e.uniform_weight.toFixed(3) +
      (att.gate != null ? "; input-aware share of the weights " + att.gate.toFixed(2) : "") + ".")
      : "No history yet: you are served as a new user (cold start).");
    const cf = e.counterfactual, out = $("outputs"); out.replaceChildren();
    const tr = document.createElement("tr"); tr.id = "outputs-row"; cell(tr, e.decoding);
    cell(tr, fmtProbs(cf.history)).id = "out-history"; cell(tr, fmtProbs(cf.cold_start)).id = "out-cold";
    cell(tr, fmtProbs(cf.persona_only)).id = "out-persona"; out.appendChild(tr);
    const w = $("weights"); w.replaceChildren();
    const top = Math.max(...e.items.map((it) => it.weight), 1e-9);
    e.items.slice().sort((a, b) => b.weight - a.weight).forEach((it) => {
      const r = document.createElement("tr"); r.className = "weight-row"; cell(r, it.index); cell(r, it.weight.toFixed(4));
      const bar = document.createElement("span"); bar.className = "bar"; bar.style.width = (8 * it.weight / top) + "rem";
      cell(r, "").appendChild(bar); cell(r, it.label); cell(r, it.excerpt); w.appendChild(r); });
    $("explanation").classList.remove("hidden");
  } catch (err) { fail("error", err); }
};
$("erase").onclick = () => $("confirm").classList.remove("hidden");
$("erase-no").onclick = () => $("confirm").classList.add("hidden");
$("erase-yes").onclick = async () => {
  $("confirm").classList.add("hidden");
  try {
    const r = await api("DELETE", "/v1/users/" + encodeURIComponent(user));
    $("account").classList.add("hidden");
    text($("erased"), "Erased " + r.user_id + ": " + Object.entries(r.removed).map(([k, v]) => k + " " + v).join(", "));
  } catch (e) { fail("error", e); }
};
</script>
</body>
</html>
"""


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The page (static: it holds no data; everything it shows comes from the API with the visitor's key)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                       "Referrer-Policy": "no-referrer"})


__all__ = ["PAGE", "page", "router"]
