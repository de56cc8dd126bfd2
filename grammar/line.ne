# The line grammar of cdp (see ../shared/CONTRACT.md and the README).
# A line arrives without its "\n" (and without a trailing "\r").
#
#   line    := blank | comment | change
#   comment := optional spaces, '#', anything
#   change  := app ':' key ':' value
#   key     := identifier ('.' identifier)*
#
# The lexer is moo (nearley's companion): a character-level grammar is about
# 5,000 times slower on long values (../shared/NOTES.md), so the value is one token.

@preprocessor typescript

@{%
import moo from "moo";

const identifier = /[A-Za-z_][A-Za-z0-9_-]*/;

// Three lexer states follow the three parts of a change; every state ends with an
// error token, so any text the grammar does not expect reaches the parser as a
// token it can report, with its column, instead of a thrown lexer error.
const lexer = moo.states({
  app: {
    space: /[ \t]+/,
    comment: /#[^\n]*/,
    name: identifier,
    colon: { match: ":", next: "key" },
    invalid: moo.error,
  },
  key: {
    name: identifier,
    dot: ".",
    colon: { match: ":", next: "value" },
    invalid: moo.error,
  },
  value: {
    value: /[^\n]+/,
  },
});

export type Token = moo.Token;

/** A dotted key as a list built from its end: constant work per segment, however many. */
export type KeyPath = { last: Token; before: KeyPath | null };

/** What the grammar yields; parse.ts turns it into a typed line for the pipeline. */
export type LineTree =
  | { kind: "blank" }
  | { kind: "comment" }
  | { kind: "change"; app: Token; key: KeyPath; value: Token | null };
%}

@lexer lexer

line -> %space:?                         {% (): LineTree => ({ kind: "blank" }) %}
      | %space:? %comment                {% (): LineTree => ({ kind: "comment" }) %}
      | change                           {% ([change]) => change %}

change -> %name %colon key %colon %value:?
  {% ([app, , key, , value]): LineTree => ({ kind: "change", app, key, value }) %}

# Left-recursive, which Earley parses in linear time; an EBNF repetition would copy the
# list at every segment (quadratic: 28 s for a 64 KiB key of 21,000 segments).
key -> %name                             {% ([last]): KeyPath => ({ last, before: null }) %}
     | key %dot %name                    {% ([before, , last]): KeyPath => ({ last, before }) %}
