// The worker's HTTP API: JSON in and out; changes carry the token (asked once on a 401).

import {askToken} from "./ui.js";

const TOKEN_KEY = "etl-token";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
    this.problems = (body && body.problems) || [];
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function explain(status, body, method, path) {
  const text = (body && (body.error || body.message)) || "";
  if (status === 401) return text || "the token was refused: ask the worker's operator for web.token";
  if (status === 403 && text.includes("read-only")) return `${text}: changes are switched off on this worker`;
  if (status === 404 && !text) return `${method} ${path}: not found on this worker (an older version?)`;
  if (status >= 500 && !text) return `the worker answered ${status}: see its log`;
  return text || `${method} ${path} failed with ${status}`;
}

/** One request; ``body`` is sent as JSON. Resolves with the parsed answer (or null). */
export async function api(method, path, body, {retried = false} = {}) {
  const headers = {"Accept": "application/json"};
  const changes = method !== "GET";
  if (changes) headers["Content-Type"] = "application/json";
  if (changes && token()) headers["Authorization"] = `Bearer ${token()}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: changes ? JSON.stringify(body || {}) : undefined,
      credentials: "same-origin",
    });
  } catch (err) {
    throw new ApiError(0, `the worker does not answer (${err.message}): is it running?`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = {error: text.slice(0, 300)}; }
  if (response.status === 401 && changes && !retried) {
    if (token()) sessionStorage.removeItem(TOKEN_KEY);
    const given = await askToken(retried ? "That token was refused; try again." : undefined);
    if (!given) throw new ApiError(401, "cancelled: this action needs the worker's token");
    sessionStorage.setItem(TOKEN_KEY, given);
    return api(method, path, body, {retried: true});
  }
  if (!response.ok) {
    if (response.status === 401) sessionStorage.removeItem(TOKEN_KEY);
    throw new ApiError(response.status, explain(response.status, data, method, path), data);
  }
  return data;
}

export const get = path => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const put = (path, body) => api("PUT", path, body);
export const del = (path, body) => api("DELETE", path, body);

/** ``kind:name`` in a URL path. */
export const enc = encodeURIComponent;
