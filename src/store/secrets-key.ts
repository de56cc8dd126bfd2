// The secrets key's file: 64 hex digits (a trailing newline allowed), kept outside the data
// directory (a systemd credential, a mounted secret) and readable by cdp alone.
import { randomBytes } from "node:crypto";
import { open, readFile } from "node:fs/promises";
import { CdpError } from "../errors.js";
import { secretsKeyOf, type SecretsKey } from "../lines/sealed.js";

/** Read a secrets key file; a missing or malformed one is a usage error naming the file. */
export async function readSecretsKey(path: string): Promise<SecretsKey> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "it does not exist" : (error as Error).message;
    throw new CdpError("usage", `cannot read the secrets key ${path}: ${why}`);
  }
  const hex = text.replace(/\r?\n$/, "");
  if (!/^[0-9a-fA-F]{64}$/.test(hex))
    throw new CdpError("usage", `the secrets key ${path} must hold 64 hex digits (256 bits), and a newline at most; it holds ${text.length} characters`);
  return secretsKeyOf(Buffer.from(hex, "hex"));
}

/** Write a new random key to `path` (mode 0600; never over an existing file). */
export async function createSecretsKey(path: string): Promise<SecretsKey> {
  const bytes = randomBytes(32);
  let file: Awaited<ReturnType<typeof open>>;
  try {
    file = await open(path, "wx", 0o600);
  } catch (error) {
    throw new CdpError("usage", `cannot create the secrets key ${path}: ${(error as Error).message}`);
  }
  try {
    await file.writeFile(`${bytes.toString("hex")}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  return secretsKeyOf(bytes);
}
