// Read a pasted config: JSON, or the YAML a config is written in (a mapping of scalars, lists and
// one level of nested mapping, block or flow style). Throws Error naming the line it cannot read.

function scalar(text, line) {
  const value = text.trim();
  if (value === "" || value === "~" || value === "null") return null;
  if (value === "true") return true;
  if (value === "false") return false;
  if (/^[-+]?(\d[\d_]*)?(\.\d+)?([eE][-+]?\d+)?$/.test(value) && /\d/.test(value)) return Number(value.replace(/_/g, ""));
  if (value.startsWith('"')) {
    try { return JSON.parse(value); } catch { throw new Error(`line ${line}: unterminated string ${value}`); }
  }
  if (value.startsWith("'")) {
    if (!value.endsWith("'") || value.length < 2) throw new Error(`line ${line}: unterminated string ${value}`);
    return value.slice(1, -1).replace(/''/g, "'");
  }
  if (value.startsWith("[")) {
    if (!value.endsWith("]")) throw new Error(`line ${line}: unclosed [ in ${value}`);
    const inner = value.slice(1, -1).trim();
    return inner ? splitFlow(inner).map((part) => scalar(part, line)) : [];
  }
  if (value.startsWith("{")) {
    if (!value.endsWith("}")) throw new Error(`line ${line}: unclosed { in ${value}`);
    const inner = value.slice(1, -1).trim();
    const out = {};
    for (const part of inner ? splitFlow(inner) : []) {
      const at = part.indexOf(":");
      if (at < 0) throw new Error(`line ${line}: expected key: value in ${part}`);
      out[String(scalar(part.slice(0, at), line))] = scalar(part.slice(at + 1), line);
    }
    return out;
  }
  return value;
}

function splitFlow(text) {
  const parts = [];
  let depth = 0, quote = null, current = "";
  for (const ch of text) {
    if (quote) { if (ch === quote) quote = null; current += ch; continue; }
    if (ch === '"' || ch === "'") quote = ch;
    if (ch === "[" || ch === "{") depth++;
    if (ch === "]" || ch === "}") depth--;
    if (ch === "," && depth === 0) { parts.push(current); current = ""; continue; }
    current += ch;
  }
  parts.push(current);
  return parts.map((p) => p.trim());
}

function stripComment(line) {
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote) { if (ch === quote) quote = null; continue; }
    if (ch === '"' || ch === "'") quote = ch;
    if (ch === "#" && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i);
  }
  return line;
}

export function parseConfigText(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("nothing to read: paste a YAML or JSON config");
  if (trimmed.startsWith("{")) {
    let data;
    try { data = JSON.parse(trimmed); } catch (error) { throw new Error(`not valid JSON: ${error.message}`); }
    if (typeof data !== "object" || Array.isArray(data) || data === null) throw new Error("expected a JSON object of config fields");
    return data;
  }
  const out = {};
  let parent = null;  // key whose block (list or mapping) the indented lines belong to
  text.split("\n").forEach((raw, index) => {
    const number = index + 1;
    const line = stripComment(raw).replace(/\s+$/, "");
    if (!line.trim() || line.trim() === "---") return;
    const indented = /^\s/.test(line);
    const body = line.trim();
    if (indented) {
      if (parent === null) throw new Error(`line ${number}: indented line without a key above it`);
      if (body.startsWith("- ") || body === "-") {
        if (out[parent] === null) out[parent] = [];
        if (!Array.isArray(out[parent])) throw new Error(`line ${number}: a list item inside the mapping ${parent}`);
        out[parent].push(scalar(body.slice(1), number));
      } else {
        const at = body.indexOf(":");
        if (at < 0) throw new Error(`line ${number}: expected key: value`);
        if (out[parent] === null) out[parent] = {};
        if (typeof out[parent] !== "object" || Array.isArray(out[parent])) throw new Error(`line ${number}: a key inside the list ${parent}`);
        out[parent][body.slice(0, at).trim()] = scalar(body.slice(at + 1), number);
      }
      return;
    }
    const at = body.indexOf(":");
    if (at < 0) throw new Error(`line ${number}: expected key: value, got ${body}`);
    const key = body.slice(0, at).trim();
    const rest = body.slice(at + 1);
    out[key] = scalar(rest, number);
    parent = rest.trim() === "" ? key : null;
  });
  return out;
}
