// Helpers shared by the page's ES modules (regio.js, dashboard.js): element look-up, the message
// box, the JSON API client (CSRF token from the page's meta tag) and a small element builder.

const csrf = document.querySelector('meta[name="csrf-token"]').content;

export const $ = (id) => document.getElementById(id);

export function say(text, kind = 'error') {
  const box = $('message');
  box.textContent = text;
  box.className = `message message-${kind}`;
  box.hidden = !text;
}

// Calls the JSON API: the parsed answer (null for 204), or an Error carrying the API's message.
export async function api(method, url, body) {
  const options = { method, headers: { 'X-CSRF-Token': csrf } };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await response.json() : await response.text();
  if (!response.ok) {
    throw new Error((data && data.message) || `${response.status} ${response.statusText}`);
  }
  return data;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
