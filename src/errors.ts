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
