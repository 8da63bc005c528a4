// The REST API of `bluegreen serve` (docs/api.md) as the console uses it: the token, JSON calls
// with `Authorization: Bearer TOKEN`, errors of the stable shape {"error": {"code", "message"}},
// and server-sent event streams read with fetch() (EventSource cannot send the header; the token
// never goes into a URL).

const TOKEN_KEY = 'bluegreen.token';

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || '';
}

// `remember`: keep it in localStorage (until Sign out) instead of this tab's sessionStorage.
export function setToken(token, remember) {
  clearToken();
  (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function errorOf(status, statusText, text) {
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: the text itself is the message
  }
  const e = body && body.error;
  if (e && typeof e.code === 'string') return new ApiError(status, e.code, String(e.message || ''));
  return new ApiError(status, `http_${status}`, (text || statusText || 'request failed').trim());
}

function headers(json) {
  const h = { Authorization: `Bearer ${getToken()}` };
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

// One call; resolves to the parsed JSON answer (null when empty), rejects with an ApiError.
export async function call(method, path, body, { signal } = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'unreachable', `serve cannot be reached (${err.message})`);
  }
  const text = await resp.text();
  if (!resp.ok) throw errorOf(resp.status, resp.statusText, text);
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body, opts) => call('POST', path, body ?? {}, opts);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// Parses one SSE block ("event: x\ndata: ...") into [name, data].
function parseBlock(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') name = value;
    if (field === 'data') data.push(value);
  }
  return data.length ? [name, data.join('\n')] : null;
}

// Reads the event stream at `path` until `signal` aborts, reconnecting with a backoff when it
// ends or fails. onEvent(name, json); onState('connecting'|'live'|'reconnecting'|'failed', err).
// 401, 403 and 404 are final ('failed'): reconnecting would not help.
export async function stream(path, { signal, onEvent, onState }) {
  let backoff = 1000;
  while (!signal.aborted) {
    let failure = null;
    try {
      onState('connecting');
      const resp = await fetch(path, { headers: headers(false), cache: 'no-store', signal });
      if (!resp.ok) {
        const err = errorOf(resp.status, resp.statusText, await resp.text());
        if ([401, 403, 404].includes(resp.status)) {
          onState('failed', err);
          return;
        }
        throw err;
      }
      onState('live');
      backoff = 1000;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (!event) continue;
          let data;
          try {
            data = JSON.parse(event[1]);
          } catch {
            continue;
          }
          onEvent(event[0], data);
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      failure = err instanceof ApiError ? err : new ApiError(0, 'unreachable', 'the live stream broke');
    }
    if (signal.aborted) return;
    onState('reconnecting', failure);
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 15000);
  }
}
