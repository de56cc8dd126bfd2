// What a key path means in an app's schema: the JSON types its value may take, and whether it is
// (or holds) a secret. Followed through properties, patternProperties, additionalProperties, $ref
// and allOf/anyOf/oneOf.
import type { AnySchemaObject } from "ajv";
import { linearRegExp } from "./patterns.js";
import { getIn } from "../lines/values.js";

/** What cdp knows of a key: the JSON types its value may have (null: any) and whether it is secret. */
export interface KeyInfo {
  types: ReadonlySet<string> | null;
  /** The value is or holds a secret (writeOnly here, above or anywhere below): never shown whole. */
  secret: boolean;
  /** The key itself (or one above it) is writeOnly: never served at all. */
  writeOnly: boolean;
}

/** The key's info, or why it does not exist; cached. */
export function keyLookup(root: AnySchemaObject): (path: readonly string[]) => KeyInfo | string {
  const cache = new Map<string, KeyInfo | string>();
  // top-level keys that no property names share what they are by the patterns they match: a map
  // of 300,000 keys is resolved once, not once per key
  const nodes = expand(root, root);
  const patterns = nodes.map((node) => Object.keys(ownObject(node.patternProperties)).map((pattern) => linearRegExp(pattern)));
  const named = new Set(nodes.flatMap((node) => Object.keys(ownObject(node.properties))));
  const plain = patterns.every((each) => each.length === 0); // no patterns: every unnamed top-level key is alike
  const unnamed = new Map<string, KeyInfo>();
  const ruleOf = (segment: string): string | undefined => {
    if (named.has(segment)) return undefined;
    return plain ? "" : patterns.map((each) => each.flatMap((pattern, index) => (pattern.test(segment) ? [index] : [])).join(",")).join(";");
  };
  return (path) => {
    // without patterns a map's unnamed keys are found by their rule alone: by name they would fill the cache, each a miss
    const known = plain && path.length === 1 ? ruleOf(path[0]!) : undefined;
    const shared = known === undefined ? undefined : unnamed.get(known);
    if (shared !== undefined) return shared;
    const dotted = path.length === 1 ? path[0]! : path.join(".");
    let info = cache.get(dotted);
    if (info === undefined) {
      const rule = known ?? (path.length === 1 ? ruleOf(path[0]!) : undefined);
      info = rule === undefined ? undefined : unnamed.get(rule);
      if (info === undefined) {
        info = resolveKey(root, path);
        if (rule !== undefined && typeof info === "object") unnamed.set(rule, info);
      }
      if (cache.size >= 10_000) cache.clear(); // lines can name endless keys: stay bounded
      cache.set(dotted, info);
    }
    return info;
  };
}

/** Walk a key path through properties, patternProperties, additionalProperties, $ref and allOf/anyOf/oneOf. */
function resolveKey(root: AnySchemaObject, path: readonly string[]): KeyInfo | string {
  let nodes = [root];
  let secret = false;
  for (const [index, segment] of path.entries()) {
    nodes = nodes.flatMap((node) => expand(root, node));
    secret ||= nodes.some((node) => node.writeOnly === true);
    const children = nodes.flatMap((node) => childSchemas(node, segment));
    if (children.length === 0) {
      const parent = path.slice(0, index).join(".");
      const known = nodes.flatMap((node) => Object.keys(ownObject(node.properties)));
      const list = known.length > 0 ? ` (it has ${[...new Set(known)].slice(0, 12).join(", ")})` : "";
      return `${parent ? `.${parent}` : ""} has no key "${segment}"${list}`;
    }
    nodes = children;
  }
  nodes = nodes.flatMap((node) => expand(root, node));
  const writeOnly = secret || nodes.some((node) => node.writeOnly === true);
  // a value that holds a secret anywhere inside is kept back as a whole
  return { types: typesOf(nodes), secret: writeOnly || nodes.some((node) => holdsSecret(root, node, new Set())), writeOnly };
}

/** Whether a schema node, or any node below it (properties, items, $ref …), is writeOnly. */
function holdsSecret(root: AnySchemaObject, node: AnySchemaObject, seen: Set<AnySchemaObject>): boolean {
  for (const each of expand(root, node)) {
    if (seen.has(each)) continue;
    seen.add(each);
    if (each.writeOnly === true) return true;
    const below = [
      ...Object.values(ownObject(each.properties)),
      ...Object.values(ownObject(each.patternProperties)),
      ...[each.additionalProperties, each.items, each.contains].filter((child) => typeof child === "object" && child !== null),
      ...(Array.isArray(each.prefixItems) ? each.prefixItems : []),
      ...(Array.isArray(each.items) ? each.items : []),
    ] as AnySchemaObject[];
    if (below.some((child) => holdsSecret(root, child, seen))) return true;
  }
  return false;
}

function childSchemas(node: AnySchemaObject, segment: string): AnySchemaObject[] {
  const properties = ownObject(node.properties);
  if (Object.hasOwn(properties, segment)) return [properties[segment] as AnySchemaObject];
  const patterns = Object.entries(ownObject(node.patternProperties))
    .filter(([pattern]) => linearRegExp(pattern).test(segment))
    .map(([, schema]) => schema as AnySchemaObject);
  if (patterns.length > 0) return patterns;
  const extra = node.additionalProperties as AnySchemaObject | boolean | undefined;
  if (extra === true) return [{}];
  return typeof extra === "object" ? [extra] : [];
}

/** A schema node together with the nodes it pulls in by $ref and the allOf/anyOf/oneOf combinators. */
function expand(root: AnySchemaObject, node: AnySchemaObject, depth = 0): AnySchemaObject[] {
  if (depth > 32 || typeof node !== "object" || node === null) return [];
  const found = [node];
  if (typeof node.$ref === "string" && node.$ref.startsWith("#")) {
    const target = getIn(root, node.$ref.slice(1).split("/").filter(Boolean).map(unescapePointer));
    if (typeof target === "object" && target !== null) found.push(...expand(root, target as AnySchemaObject, depth + 1));
  }
  for (const combinator of ["allOf", "anyOf", "oneOf"]) {
    const branches = node[combinator];
    if (Array.isArray(branches)) for (const branch of branches) found.push(...expand(root, branch, depth + 1));
  }
  return found;
}

export const unescapePointer = (segment: string) => decodeURIComponent(segment).replace(/~1/g, "/").replace(/~0/g, "~");

/** The JSON types a value may take under these nodes, or null when they do not say. */
function typesOf(nodes: AnySchemaObject[]): ReadonlySet<string> | null {
  let types: Set<string> | null = null;
  for (const node of nodes) {
    const declared = node.type ?? constTypes(node);
    if (declared === undefined) continue;
    const list: string[] = Array.isArray(declared) ? declared : [declared];
    // every declaration must hold (allOf), so the usable types are their intersection
    types = types === null ? new Set(list) : new Set(list.filter((type) => types!.has(type)));
  }
  if (types?.has("number")) types.add("integer");
  return types;
}

function constTypes(node: AnySchemaObject): string[] | undefined {
  const values = "const" in node ? [node.const] : Array.isArray(node.enum) ? node.enum : undefined;
  return values?.map((value: unknown) => (value === null ? "null" : Array.isArray(value) ? "array" : typeof value === "number" ? "number" : typeof value));
}

function ownObject(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}
