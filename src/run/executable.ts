/** Executables looked up as the shell would (the app, llama-server, setpriv, the init). */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, isAbsolute, join, resolve } from 'node:path';

/**
 * An executable as the shell would find it: a name with a slash is a path (relative to `cwd`), any other
 * name is looked up on PATH. null when there is no such executable file.
 */
export async function findExecutable(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): Promise<string | null> {
  const candidates = name.includes('/')
    ? [isAbsolute(name) ? name : resolve(cwd, name)]
    : (env.PATH ?? '')
        .split(delimiter)
        .filter((d) => d !== '')
        .map((d) => join(resolve(cwd, d), name));
  for (const candidate of candidates) {
    try {
      const st = await stat(candidate);
      if (!st.isFile()) continue;
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here, or not executable: try the next PATH entry
    }
  }
  return null;
}

/** Why a path given as an executable cannot be run, for the error message. */
export async function whyNotExecutable(path: string): Promise<string> {
  try {
    const st = await stat(path);
    if (!st.isFile()) return 'is not a file';
    await access(path, constants.X_OK);
    return 'is executable';
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT') return 'does not exist';
    if (errno === 'EACCES') return 'is not executable by this user';
    return `cannot be run (${errno ?? String(e)})`;
  }
}
