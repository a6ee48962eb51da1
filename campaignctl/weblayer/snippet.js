/* campaignctl web layers: the retailer's site includes, on every page,
 *
 *   <script async src="https://track.example/layers/snippet.js" data-visitor="TOKEN"></script>
 *
 * data-visitor: the signed-in customer's token (campaignctl.weblayer.visitor_token,
 * computed by the site's backend); leave it out for anonymous visitors. A visitor
 * who arrived by a campaign link (?m=<message key>) is recognised by that link for
 * the rest of the browser session. data-endpoint overrides where the rules and
 * events live (default: the directory the snippet was loaded from).
 *
 * The snippet fetches the visitor's layers, picks the highest-priority one whose
 * caps allow it (per browser session and per day, kept in sessionStorage and
 * localStorage), shows it on load, on exit intent or after some seconds, and
 * reports the impression and a click. It sets data-campaignctl-layer on <html>
 * to what it decided: none, armed, shown, capped or error.
 * No dependencies, no cookies, no innerHTML: the content is text.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.campaignctlLayerLoaded) return;
  window.campaignctlLayerLoaded = true;

  var PREFIX = "campaignctl.layer.";
  var root = document.documentElement;
  var endpoint = script.getAttribute("data-endpoint") || script.src.replace(/\/[^\/?#]*([?#].*)?$/, "");
  var visitor = script.getAttribute("data-visitor") || "";
  var local = usable("localStorage");
  var session = usable("sessionStorage");

  function decided(state) { root.setAttribute("data-campaignctl-layer", state); }

  function usable(name) {
    try {
      var storage = window[name];
      storage.setItem(PREFIX + "probe", "1");
      storage.removeItem(PREFIX + "probe");
      return storage;
    } catch (e) {
      return null;
    }
  }

  function read(storage, name) {
    try { return JSON.parse(storage.getItem(PREFIX + name)) || {}; } catch (e) { return {}; }
  }

  function write(storage, name, value) { storage.setItem(PREFIX + name, JSON.stringify(value)); }

  function arrivedBy() {
    var key = new URLSearchParams(window.location.search).get("m");
    if (key && session) session.setItem(PREFIX + "arrived", key);
    return key || (session && session.getItem(PREFIX + "arrived")) || "";
  }

  function today() {
    var now = new Date();
    return now.getFullYear() + "-" + (now.getMonth() + 1) + "-" + now.getDate();
  }

  function shownSoFar(layer) {
    var day = read(local, "day." + layer.key);
    return { day: day.date === today() ? day.n || 0 : 0, session: read(session, "session." + layer.key).n || 0 };
  }

  function allowed(layer) {
    var shown = shownSoFar(layer);
    return shown.day < layer.caps.per_day && shown.session < layer.caps.per_session && !read(local, "clicked." + layer.key).at;
  }

  function countShown(layer) {
    var shown = shownSoFar(layer);
    write(local, "day." + layer.key, { date: today(), n: shown.day + 1 });
    write(session, "session." + layer.key, { n: shown.session + 1 });
  }

  function report(layer, type) {
    var body = JSON.stringify({ key: layer.key, sig: layer.sig, type: type });
    var url = endpoint + "/events";
    // A beacon survives the navigation a click starts; text/plain needs no CORS preflight.
    if (navigator.sendBeacon && navigator.sendBeacon(url, body)) return;
    fetch(url, { method: "POST", body: body, keepalive: true, mode: "no-cors", credentials: "omit" });
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function show(layer) {
    if (document.getElementById("campaignctl-layer")) return;
    var content = layer.content;
    var box = element("div", "campaignctl-layer");
    box.id = "campaignctl-layer";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-modal", "false");
    box.setAttribute("data-key", layer.key);
    box.style.cssText = "position:fixed;z-index:2147483647;right:16px;bottom:16px;max-width:360px;padding:16px 20px;" +
      "background:#fff;color:#222;border-radius:8px;box-shadow:0 4px 24px rgba(0,0,0,.25);font:15px/1.4 sans-serif";
    var close = element("button", "campaignctl-layer-close", "\u00d7");
    close.setAttribute("aria-label", "Close");
    close.style.cssText = "float:right;border:0;background:none;font-size:20px;cursor:pointer";
    close.addEventListener("click", function () { box.remove(); });
    box.appendChild(close);
    if (content.title) box.appendChild(element("strong", "campaignctl-layer-title", content.title));
    box.appendChild(element("p", "campaignctl-layer-body", content.body));
    if (content.url && /^https?:\/\//i.test(content.url)) {
      var button = element("a", "campaignctl-layer-button", content.button || "Open");
      button.href = content.url;
      button.style.cssText = "display:inline-block;padding:8px 16px;background:#c0392b;color:#fff;border-radius:4px;text-decoration:none";
      button.addEventListener("click", function () {
        write(local, "clicked." + layer.key, { at: Date.now() });
        report(layer, "click");
      });
      box.appendChild(button);
    }
    document.body.appendChild(box);
    countShown(layer);
    report(layer, "impression");
    decided("shown");
  }

  function arm(layer) {
    var trigger = layer.trigger || { on: "load" };
    var fired = false;
    function fire() {
      if (fired) return;
      fired = true;
      if (allowed(layer)) show(layer); else decided("capped");
    }
    if (trigger.on === "exit") {
      document.addEventListener("mouseout", function (event) {
        if (!event.relatedTarget && event.clientY <= 0) fire();
      });
      decided("armed");
    } else if (trigger.on === "delay") {
      window.setTimeout(fire, Math.max(0, trigger.seconds || 0) * 1000);
      decided("armed");
    } else {
      fire();
    }
  }

  function choose(rules) {
    var layers = (rules.layers || []).slice().sort(function (a, b) { return (b.priority || 0) - (a.priority || 0); });
    if (!layers.length) return decided("none");
    for (var i = 0; i < layers.length; i++) {
      if (allowed(layers[i])) return arm(layers[i]);
    }
    decided("capped");
  }

  function start() {
    if (!local || !session) return decided("error"); // caps could not hold: show nothing rather than too much
    var query = new URLSearchParams();
    if (visitor) query.set("visitor", visitor);
    var key = arrivedBy();
    if (key) query.set("m", key);
    if (!visitor && !key) return decided("none");
    fetch(endpoint + "/rules?" + query.toString(), { credentials: "omit" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(choose)
      .catch(function () { decided("error"); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
