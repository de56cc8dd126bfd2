// Stage 2: one line of text -> a typed line, or a parse error with its column.
// The grammar itself lives in grammar/line.ne and is compiled by `npm run build`.
import nearley from "nearley";
import grammar, { type KeyPath, type LineTree, type Token } from "./generated/line-grammar.js";

/** An identifier (app name or key segment) may have at most this many characters. */
export const MAX_IDENTIFIER = 64;
/** A key may have at most this many segments (checked before parsing: Earley's work grows with them). */
export const MAX_SEGMENTS = 32;

/** A line as the grammar sees it. `path` is the dotted key split into its segments. */
export type ParsedLine =
  | { kind: "blank" }
  | { kind: "comment"; text: string }
  | { kind: "change"; app: string; key: string; path: string[]; valueText: string }
  | { kind: "error"; column: number; message: string };

const compiled = nearley.Grammar.fromCompiled(grammar as unknown as nearley.CompiledRules);

// nearley keeps its chart in `table`; its typings omit it. We read it only to name
// the tokens the grammar expected where it failed.
interface Chart {
  table: { scannable: { rule: { symbols: unknown[] }; dot: number }[] }[];
  current: number;
}

/**
 * Parse one line (without its newline) by the contract's grammar.
 * @example parseLine("ticker:interval:1500") // { kind: "change", app: "ticker", key: "interval", ... }
 */
export function parseLine(text: string): ParsedLine {
  return strayReturn(text) ?? parseCommonLine(text) ?? parseWithGrammar(text);
}

// A bare "\r" hides what comes after it on a terminal (`app:k:a\rapp:k:b` shows as `app:k:b`):
// only one just before the newline is taken (and dropped before a line gets here).
function strayReturn(text: string): ParsedLine | undefined {
  const at = text.indexOf("\r");
  if (at !== -1) return error(at, "a carriage return (\\r) may only end a line, just before its newline");
  // a line from an inbox never holds one; text from elsewhere (an HTTP request's line, a rollout's) may
  const newline = text.indexOf("\n");
  return newline === -1 ? undefined : error(newline, "a newline (\\n) ends a line: a change is one line, give each on its own");
}

// The shapes almost every line has, recognised without building an Earley chart (a benchmark
// showed the chart per line to be most of the cost of a burst and of a replay). The grammar
// stays the single source of truth: anything else goes to it, and a property test checks that
// both agree on arbitrary input.
const COMMON_CHANGE = /^([A-Za-z_][A-Za-z0-9_-]{0,63}):([A-Za-z_][A-Za-z0-9_-]{0,63}(?:\.[A-Za-z_][A-Za-z0-9_-]{0,63}){0,31}):([^\n]*)$/;
const COMMON_COMMENT = /^[ \t]*#[^\n]*$/;

function parseCommonLine(text: string): ParsedLine | undefined {
  const change = COMMON_CHANGE.exec(text);
  if (change) {
    const key = change[2]!;
    return { kind: "change", app: change[1]!, key, path: key.split("."), valueText: change[3]! };
  }
  if (COMMON_COMMENT.test(text)) return { kind: "comment", text };
  return undefined;
}

/** Parse by the nearley grammar alone (exported for the test that holds the fast path to it). */
export function parseWithGrammar(text: string): ParsedLine {
  const stray = strayReturn(text);
  if (stray) return stray;
  const tooDeep = segmentLimit(text);
  if (tooDeep !== undefined) return error(tooDeep, `a key may have at most ${MAX_SEGMENTS} segments`);
  const parser = new nearley.Parser(compiled);
  try {
    parser.feed(text);
  } catch (error) {
    const token = (error as { token?: Token }).token;
    return failure(text, parser, token?.offset ?? text.length);
  }
  const tree = parser.results[0] as LineTree | undefined;
  if (!tree) return failure(text, parser, text.length);
  if (tree.kind !== "change") return tree.kind === "comment" ? { kind: "comment", text } : tree;

  const key: Token[] = [];
  for (let node: KeyPath | null = tree.key; node; node = node.before) key.push(node.last);
  key.reverse();
  for (const token of [tree.app, ...key]) {
    if (token.text.length > MAX_IDENTIFIER) {
      const what = token === tree.app ? "app name" : "key name";
      return error(token.offset, `${what} "${token.text.slice(0, 16)}…" is longer than ${MAX_IDENTIFIER} characters`);
    }
  }
  const path = key.map((token) => token.text);
  return { kind: "change", app: tree.app.text, key: path.join("."), path, valueText: tree.value?.text ?? "" };
}

/** The offset of the dot that starts segment MAX_SEGMENTS + 1 of the key, if there is one. */
function segmentLimit(text: string): number | undefined {
  if (!/^[A-Za-z_]/.test(text)) return undefined; // not a change: a comment may hold anything
  const keyStart = text.indexOf(":");
  if (keyStart === -1) return undefined;
  const keyEnd = text.indexOf(":", keyStart + 1);
  let dots = 0;
  for (let i = text.indexOf(".", keyStart); i !== -1 && (keyEnd === -1 || i < keyEnd); i = text.indexOf(".", i + 1)) {
    if (++dots === MAX_SEGMENTS) return i;
  }
  return undefined;
}

function error(offset: number, message: string): ParsedLine {
  return { kind: "error", column: offset + 1, message: `column ${offset + 1}: ${message}` };
}

/** Say, in an operator's words, what the grammar expected at `offset` and what it found. */
function failure(text: string, parser: nearley.Parser, offset: number): ParsedLine {
  const chart = parser as unknown as Chart;
  const column = chart.table[chart.current];
  const expected = new Set<string>();
  for (const state of column?.scannable ?? []) {
    const symbol = state.rule.symbols[state.dot] as { type?: string };
    if (symbol.type) expected.add(symbol.type);
  }
  const part = (text.slice(0, offset).match(/:/g) ?? []).length; // 0: app, 1: key, 2: value
  const found = offset >= text.length ? "end of line" : JSON.stringify(text[offset]);

  if (part === 0 && /^[ \t]/.test(text) && expected.has("comment")) {
    return error(offset, `a change must start at column 1, found ${found} after leading spaces`);
  }
  const names = ORDER.filter((type) => expected.has(type)).map((type) => tokenName(type, part));
  const hint = part < 2 && (text.match(/:/g) ?? []).length < 2 ? " (a change is app:key:value)" : "";
  return error(offset, `expected ${names.join(" or ") || "end of line"}, found ${found}${hint}`);
}

// Spaces and comments are never what an operator meant to write where a change fails.
const ORDER = ["colon", "dot", "name"];

function tokenName(type: string, part: number): string {
  switch (type) {
    case "name":
      return part === 0 ? "an app name (a letter or '_', then letters, digits, '_' or '-')" : "a key name";
    case "colon":
      return "':'";
    default:
      return "'.'";
  }
}

/** The app a line names before its first ':', even when the rest does not parse; undefined for none. */
export function appOfLine(text: string): string | undefined {
  return /^[ \t]*([A-Za-z_][A-Za-z0-9_-]{0,63})[ \t]*:/.exec(text)?.[1];
}
