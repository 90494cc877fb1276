// A small, offline reader for /openapi.json: each operation with its parameters, body and responses.
// FastAPI's Swagger UI would load its code from a CDN, which a server without internet cannot reach.
"use strict";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function resolveRef(spec, schema) {
  if (!schema || !schema.$ref) return schema || {};
  return schema.$ref.replace(/^#\//, "").split("/").reduce((node, key) => (node || {})[key], spec) || {};
}

function schemaText(spec, schema) {
  const s = resolveRef(spec, schema);
  if (s.$ref) return s.$ref.split("/").pop();
  if (s.title && s.properties) {
    const fields = Object.entries(s.properties).map(([name, prop]) => `${name}: ${schemaText(spec, prop)}`);
    return `${s.title} { ${fields.join(", ")} }`;
  }
  if (s.type === "array") return `${schemaText(spec, s.items)}[]`;
  if (s.anyOf) return s.anyOf.map((part) => schemaText(spec, part)).join(" | ");
  if (s.format === "binary") return "file";
  return s.type || "any";
}

function table(headings, rows) {
  const head = el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

function operation(spec, path, method, op) {
  const section = el("section", { class: "operation" });
  section.append(el("h2", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), " ", el("code", {}, path)));
  if (op.summary) section.append(el("p", { class: "summary" }, op.summary));
  if (op.description) section.append(el("p", {}, op.description));
  if (op.security) section.append(el("p", { class: "note" }, "Needs the API key: X-API-Key header or Authorization: Bearer."));
  if (op.parameters && op.parameters.length) {
    section.append(el("h3", {}, "Parameters"));
    section.append(table(["Name", "In", "Type", "Description"], op.parameters.map((p) =>
      [p.name, p.in, schemaText(spec, p.schema), p.description || ""])));
  }
  if (op.requestBody) {
    section.append(el("h3", {}, "Request body"));
    if (op.requestBody.description) section.append(el("p", {}, op.requestBody.description));
    section.append(table(["Content type", "Schema"], Object.entries(op.requestBody.content).map(([type, c]) =>
      [type, schemaText(spec, c.schema)])));
  }
  section.append(el("h3", {}, "Responses"));
  section.append(table(["Status", "Description", "Content"], Object.entries(op.responses || {}).map(([code, r]) =>
    [code, r.description || "", Object.entries(r.content || {}).map(([type, c]) =>
      `${type}${c.schema ? ": " + schemaText(spec, c.schema) : ""}`).join("; ")])));
  return section;
}

// The quick start's commands name this server, whatever host and port it was started on.
function showOrigin() {
  for (const node of document.querySelectorAll(".origin")) node.textContent = window.location.origin;
}

async function render() {
  showOrigin();
  const status = document.getElementById("docs-status");
  try {
    const response = await fetch("/openapi.json");
    const spec = await response.json();
    const target = document.getElementById("operations");
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(methods)) target.append(operation(spec, path, method, op));
    }
    status.textContent = `${spec.info.title} ${spec.info.version}: ${spec.info.description || ""}`;
  } catch (error) {
    status.textContent = `Could not load /openapi.json: ${error.message}`;
    status.classList.add("error");
  }
}

document.addEventListener("DOMContentLoaded", render);
