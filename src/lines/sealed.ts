// Secret values at rest: a value's text sealed with AES-256-GCM under a 256-bit key, written in
// a line in its place as `!sealed:v1:KEYID:DATA` (DATA: base64url of the 12-byte nonce, the
// ciphertext and the 16-byte tag). The key id (from the key, not secret) lets a value name the
// key it needs, so that keys can rotate. Opening finds the key by its id among the keys this
// process was given: every reader of values (replay, the fleet's records, a pushed line) opens
// a sealed value the same way, wherever it comes from.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";

const PREFIX = "!sealed:v1:";
const SEALED = /^!sealed:v1:([0-9a-f]{12}):([A-Za-z0-9_-]+)$/;
const NONCE = 12;
const TAG = 16;

/** A key to seal secret values with. */
export interface SecretsKey {
  /** 12 hex digits derived from the key: which key a sealed value needs. */
  readonly id: string;
  /** The value's text, sealed. */
  seal(text: string): string;
}

const keyring = new Map<string, Buffer>();

/** The key of 32 bytes; it is kept to open values sealed with it. */
export function secretsKeyOf(bytes: Buffer): SecretsKey {
  if (bytes.length !== 32) throw new Error("a secrets key has 32 bytes");
  const key = Buffer.from(bytes);
  const id = createHash("sha256").update("cdp secrets key id\n").update(key).digest("hex").slice(0, 12);
  keyring.set(id, key);
  return {
    id,
    seal(text) {
      const nonce = randomBytes(NONCE);
      const cipher = createCipheriv("aes-256-gcm", key, nonce);
      cipher.setAAD(Buffer.from(PREFIX + id));
      const sealed = Buffer.concat([nonce, cipher.update(text, "utf8"), cipher.final(), cipher.getAuthTag()]);
      return `${PREFIX}${id}:${sealed.toString("base64url")}`;
    },
  };
}

/** Whether a value's text is sealed (it may still fail to open). */
export const isSealed = (text: string): boolean => text.startsWith(PREFIX);

/** The key id a sealed value needs, or undefined for a value that is not sealed. */
export const sealedWith = (text: string): string | undefined => SEALED.exec(text)?.[1];

/**
 * The text a sealed value holds, or why it cannot be opened (words that follow "app.key"; they
 * never show the value).
 */
export function openSealed(text: string): { ok: true; text: string } | { ok: false; reason: string } {
  const match = SEALED.exec(text);
  if (!match) return { ok: false, reason: "is a sealed value that is cut or altered (!sealed:v1:KEYID:DATA)" };
  const [, id, data] = match as unknown as [string, string, string];
  const key = keyring.get(id);
  if (!key) {
    const given = keyring.size === 0 ? "cdp was given no key" : `cdp has key ${[...keyring.keys()].join(", ")}`;
    return { ok: false, reason: `is sealed with secrets key ${id}, and ${given}: give that key with --secrets-key FILE (or CDP_SECRETS_KEY_FILE)` };
  }
  const bytes = Buffer.from(data, "base64url");
  if (bytes.length < NONCE + TAG) return { ok: false, reason: `is a sealed value that is cut or altered (key ${id})` };
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, bytes.subarray(0, NONCE));
    decipher.setAAD(Buffer.from(PREFIX + id));
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG));
    return { ok: true, text: Buffer.concat([decipher.update(bytes.subarray(NONCE, bytes.length - TAG)), decipher.final()]).toString("utf8") };
  } catch {
    return { ok: false, reason: `is a sealed value that does not open with key ${id}: it was altered` };
  }
}
