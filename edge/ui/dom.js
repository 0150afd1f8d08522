// Small DOM helpers. Text from the gateway is only ever set as text, never as
// markup, so a device name like "<img onerror=...>" stays a name.

/** Build an element: el("button", {class: "x", dataset: {testid: "y"}, onclick}, "text", child). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      node.className = value;
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function byTestId(testId, root = document) {
  return root.querySelector(`[data-testid="${CSS.escape(testId)}"]`);
}

export function show(node, visible) {
  node.hidden = !visible;
}

/** "just now", "3 min ago", "2 h ago", "5 d ago" for an epoch-ms time. */
export function age(epochMs, now = Date.now()) {
  if (typeof epochMs !== "number") {
    return "never";
  }
  const seconds = Math.max(0, Math.round((now - epochMs) / 1000));
  if (seconds < 45) {
    return "just now";
  }
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ago`;
  }
  const hours = Math.round(minutes / 60);
  if (hours < 48) {
    return `${hours} h ago`;
  }
  return `${Math.round(hours / 24)} d ago`;
}

/** "in 4 min" for a future epoch-ms time, "expired" once past. */
export function remaining(epochMs, now = Date.now()) {
  if (typeof epochMs !== "number") {
    return "";
  }
  const seconds = Math.round((epochMs - now) / 1000);
  if (seconds <= 0) {
    return "expired";
  }
  if (seconds < 60) {
    return `in ${seconds} s`;
  }
  const minutes = Math.round(seconds / 60);
  if (minutes < 120) {
    return `in ${minutes} min`;
  }
  return `in ${Math.round(minutes / 60)} h`;
}

/**
 * The first 16 hex digits of a device id in groups of four (edge/pairing/models.py
 * fingerprint): what an operator compares between the device's page and the approval.
 */
export function fingerprint(deviceId) {
  const head = String(deviceId || "").slice(0, 16);
  return (head.match(/.{1,4}/g) || []).join(" ");
}

/** "4:05" for a number of milliseconds (never below 0:00): the page's countdowns. */
export function clock(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** A long id cut to its first 12 characters, for lists where the full id sits in a title. */
export function shortId(id) {
  return typeof id === "string" && id.length > 16 ? `${id.slice(0, 12)}…` : String(id ?? "");
}

export function absoluteTime(epochMs) {
  return typeof epochMs === "number" ? new Date(epochMs).toLocaleString() : "";
}

/** Copy text, falling back to selecting it when the Clipboard API is refused. */
export async function copyText(text, fallbackNode) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallbackNode) {
      const range = document.createRange();
      range.selectNodeContents(fallbackNode);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    return false;
  }
}

/** A copy button that reports its result in its own label for a moment. */
export function copyButton(getText, sourceNode, testId, label = "Copy") {
  const button = el("button", { type: "button", class: "secondary small", dataset: { testid: testId } }, label);
  button.addEventListener("click", async () => {
    const copied = await copyText(getText(), sourceNode);
    button.textContent = copied ? "Copied" : "Selected — press Ctrl+C";
    window.setTimeout(() => {
      button.textContent = label;
    }, 2000);
  });
  return button;
}

const SVG_NS = "http://www.w3.org/2000/svg";
const QR_ELEMENTS = new Set(["svg", "g", "path", "rect"]);
const QR_ATTRIBUTES = new Set(["width", "height", "viewBox", "class", "transform", "fill", "stroke", "d", "x", "y"]);

/**
 * The gateway's QR SVG as an <img> data URL, after keeping only the shapes a
 * QR code needs. An SVG inside <img> cannot run script, and the page's CSP
 * forbids inline styles, so this is both safer and the only way it renders.
 */
export function qrImage(svgText, alt) {
  const parsed = new DOMParser().parseFromString(String(svgText), "text/html");
  const source = parsed.querySelector("svg");
  if (!source || source.namespaceURI !== SVG_NS) {
    return null;
  }
  const clean = cleanSvgNode(source);
  if (!clean.getAttribute("viewBox")) {
    const width = Number.parseFloat(clean.getAttribute("width"));
    const height = Number.parseFloat(clean.getAttribute("height"));
    if (width > 0 && height > 0) {
      clean.setAttribute("viewBox", `0 0 ${width} ${height}`);
    }
  }
  const markup = new XMLSerializer().serializeToString(clean);
  return el("img", {
    src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(markup)}`,
    alt,
    class: "qr",
    dataset: { testid: "invite-qr" },
  });
}

function cleanSvgNode(node) {
  const copy = document.createElementNS(SVG_NS, node.localName);
  for (const attribute of node.attributes) {
    const name = attribute.name === "viewbox" ? "viewBox" : attribute.name;
    if (QR_ATTRIBUTES.has(name) && !/url\s*\(|javascript:/i.test(attribute.value)) {
      copy.setAttribute(name, attribute.value);
    }
  }
  for (const child of node.children) {
    if (QR_ELEMENTS.has(child.localName)) {
      copy.append(cleanSvgNode(child));
    }
  }
  return copy;
}
