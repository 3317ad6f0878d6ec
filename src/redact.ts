/**
 * Secrets kept out of what is printed or recorded: a URL's credentials (`http://user:secret@host`)
 * and the values of query parameters that look like tokens (`?token=…`, `&api_key=…`) become `***`.
 * The values themselves are still used where they are needed (a connection, a child's environment);
 * only what is shown goes through here.
 */

export const REDACTED = '***';

/**
 * Query parameter names whose values are credentials: a word of the name (split at `_`, `-`, `.`
 * or a change of case) is one of these, e.g. `token`, `access_token`, `X-Api-Key`, `sig`.
 */
const SECRET_WORDS = new Set([
  'auth',
  'authorization',
  'bearer',
  'code',
  'credential',
  'credentials',
  'jwt',
  'key',
  'apikey',
  'pass',
  'passwd',
  'password',
  'pwd',
  'secret',
  'session',
  'sessionid',
  'sid',
  'sig',
  'signature',
  'token',
]);

/** Whether a query parameter named `name` carries a credential. */
export function isSecretParameter(name: string): boolean {
  const words = name
    .replace(/([a-z0-9])([A-Z])/gu, '$1_$2')
    .toLowerCase()
    .split(/[^a-z0-9]+/u);
  return (
    words.some((w) => SECRET_WORDS.has(w)) || SECRET_WORDS.has(name.toLowerCase().replace(/[^a-z]/gu, ''))
  );
}

/** `url` with its credentials and token-like query values replaced by `***`; anything else as it is. */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return redactLoose(url);
  }
  if (!u.username && !u.password && u.search === '') return url;
  let out = url;
  if (u.username || u.password) {
    // the whole of the user part: a user name can be a token too (https://<token>@host)
    out = out.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/iu, `$1${REDACTED}@`);
  }
  return out.replace(/([?&])([^=&#]*)=([^&#]*)/gu, (whole, sep: string, name: string) =>
    isSecretParameter(decodeSafely(name)) ? `${sep}${name}=${REDACTED}` : whole,
  );
}

/** Every URL in `text` redacted (a command line, a message). */
export function redactText(text: string): string {
  return text.replace(/[a-z][a-z0-9+.-]*:\/\/[^\s"'<>`]+/giu, (url) => redactUrl(url));
}

/** For what does not parse as a URL: the same two rules, by pattern. */
function redactLoose(text: string): string {
  return text
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#\s]*@/iu, `$1${REDACTED}@`)
    .replace(/([?&])([^=&#\s]*)=([^&#\s]*)/gu, (whole, sep: string, name: string) =>
      isSecretParameter(name) ? `${sep}${name}=${REDACTED}` : whole,
    );
}

function decodeSafely(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/gu, ' '));
  } catch {
    return s;
  }
}
