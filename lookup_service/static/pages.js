/* The "try it" form: POST /Lookup with the token in its header, the answer shown as a caller card
   and as raw JSON, then the tenant's backends from GET /status. No token in any URL; it is kept in
   this tab's sessionStorage only. Every text goes in with textContent (contact data is not HTML). */
(function () {
  "use strict";
  var form = document.getElementById("try-form");
  var header = form.getAttribute("data-token-header");
  var tokenInput = document.getElementById("token");
  var message = document.getElementById("message");
  var cards = document.getElementById("cards");
  var KEY = "phone-lookup-token";

  tokenInput.value = sessionStorage.getItem(KEY) || "";

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (className) { node.className = className; }
    return node;
  }
  function pick(contact, key) { // camelCase or PascalCase keys, whichever the service is set to
    var pascal = key.charAt(0).toUpperCase() + key.slice(1);
    return contact[key] !== undefined ? contact[key] : contact[pascal];
  }
  function safeUrl(value) { return typeof value === "string" && /^https?:\/\//i.test(value) ? value : null; }
  function link(href, text) {
    var a = el("a", text);
    a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer";
    return a;
  }

  function card(contact) {
    var box = el("article", null, "card");
    var name = pick(contact, "name") || "(no name)";
    box.setAttribute("aria-label", "Caller card: " + name);
    box.appendChild(el("p", name, "name"));
    box.appendChild(el("p", pick(contact, "company") || "", "company"));
    var logo = safeUrl(pick(contact, "crmLogo"));
    var crm = pick(contact, "crmName") || "";
    if (logo) {
      var img = el("img", null, "logo");
      img.src = logo; img.alt = crm; img.title = crm;
      box.appendChild(img);
    } else if (crm) {
      box.appendChild(el("span", crm, "logo crm-name"));
    }
    var links = el("p", null, "links");
    var contactUri = safeUrl(pick(contact, "contactUri"));
    var companyUri = safeUrl(pick(contact, "companyUri"));
    if (contactUri) { links.appendChild(link(contactUri, "Contact in " + (crm || "the CRM"))); }
    if (companyUri) { links.appendChild(link(companyUri, "Company in " + (crm || "the CRM"))); }
    if (links.childNodes.length) { box.appendChild(links); }
    var custom = pick(contact, "customData") || {};
    var keys = Object.keys(custom);
    if (keys.length) {
      var list = el("dl");
      keys.forEach(function (key) { list.appendChild(el("dt", key)); list.appendChild(el("dd", custom[key])); });
      box.appendChild(list);
    }
    var actions = pick(contact, "crmActions") || [];
    if (actions.length) {
      var bar = el("p", null, "actions");
      actions.forEach(function (action) {
        var button = el("button", action);
        button.type = "button"; button.disabled = true;
        button.title = "the CONNECTOR posts the call to /" + action + " when the user clicks this";
        bar.appendChild(button);
      });
      box.appendChild(bar);
    }
    return box;
  }

  function showBackends(token) {
    var headers = {}; headers[header] = token;
    fetch("status", {headers: headers, cache: "no-store"}).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (status) {
      var box = document.getElementById("backends-box");
      if (!status) { box.hidden = true; return; }
      document.getElementById("tenant-name").textContent = status.tenant;
      var body = document.getElementById("backends");
      body.textContent = "";
      status.backends.forEach(function (backend) {
        var row = el("tr");
        [backend.name, backend.type, backend.mode, backend.breaker, backend.lastSync || "-",
         backend.contacts === null ? "-" : backend.contacts].forEach(function (value) {
          row.appendChild(el("td", value));
        });
        body.appendChild(row);
      });
      box.hidden = false;
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = tokenInput.value.trim();
    var number = document.getElementById("number").value.trim();
    sessionStorage.setItem(KEY, token);
    var headers = {"Content-Type": "application/json"}; headers[header] = token;
    message.className = ""; message.textContent = "Looking up…";
    cards.textContent = "";
    fetch("Lookup", {method: "POST", headers: headers, cache: "no-store",
                     body: JSON.stringify({inputs: {phoneNumber: number}})}).then(function (response) {
      return response.text().then(function (text) {
        var payload = null;
        try { payload = JSON.parse(text); } catch (error) { payload = null; }
        document.getElementById("raw").textContent = payload === null ? text : JSON.stringify(payload, null, 2);
        document.getElementById("raw-box").hidden = false;
        if (!response.ok) {
          message.className = "error";
          message.textContent = "Error " + response.status + ": " + ((payload && payload.message) || text);
          document.getElementById("backends-box").hidden = true;
          return;
        }
        message.textContent = payload.length ? payload.length + " contact(s)" : "Nobody matches this number ([]).";
        payload.forEach(function (contact) { cards.appendChild(card(contact)); });
        showBackends(token);
      });
    }, function (error) {
      message.className = "error";
      message.textContent = "The service did not answer: " + error.message;
    });
  });

  document.getElementById("forget").addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    tokenInput.value = "";
    document.getElementById("backends-box").hidden = true;
    message.textContent = "The token is forgotten.";
  });
})();
