import { asCodiError, type CodiError } from '../../src/errors.js';

/**
 * What `run` threw, as the CodiError a command reports: a CodiError as it is, a format's refusal with
 * its code's exit status and hint (as the layer above the formats gives them). Anything else thrown
 * fails the test, and so does returning.
 */
export function thrown(run: () => unknown): CodiError {
  try {
    run();
  } catch (e) {
    return codiErrorOrRethrow(e);
  }
  throw new Error('expected it to throw a CodiError; it returned');
}

/** What `promise` rejected with, as `thrown` gives it; fails the test when it resolved. */
export async function rejected(promise: Promise<unknown>): Promise<CodiError> {
  try {
    await promise;
  } catch (e) {
    return codiErrorOrRethrow(e);
  }
  throw new Error('expected it to reject with a CodiError; it resolved');
}

function codiErrorOrRethrow(e: unknown): CodiError {
  const error = asCodiError(e);
  if (error === undefined) throw e;
  return error;
}
