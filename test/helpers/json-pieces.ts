/** Pieces the JSON fuzzers build their inputs from. */

/** JSON's six structural characters (RFC 8259 §2): random arrangements of them reach every parser state. */
export const JSON_STRUCTURE = ['{', '}', '[', ']', ',', ':'] as const;
