// The one error type for what an operator can cause; the CLI maps its code to an exit code.

/**
 * usage: bad command line; bootstrap: a schema or the journal is invalid; busy: what cdp needs is
 * taken (another cdp runs there, the port is in use); inbox: unreachable too long; refused: a
 * request (such as a rollback) that the schemas would reject; remote: a sidecar that cannot be
 * reached or refuses the client.
 */
export type CdpErrorCode = "usage" | "bootstrap" | "busy" | "inbox" | "refused" | "remote";

/** An error whose message is written for the operator: where, what was found, what was expected. */
export class CdpError extends Error {
  override readonly name = "CdpError";
  constructor(
    readonly code: CdpErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The longest delay a Node timer takes (2^31−1 ms, ~24.8 days): a longer one fires after 1 ms. */
export const TIMER_MAX_MS = 2 ** 31 - 1;

/** A library option that becomes a timer: whole milliseconds a timer can take, or a usage error naming it. */
export function checkMs(name: string, value: number | undefined): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value <= 0 || value > TIMER_MAX_MS)
    throw new CdpError("usage", `${name} must be a whole number of milliseconds from 1 to ${TIMER_MAX_MS}, got ${String(value)}`);
}
