// The CLI's last step: whatever a command printed has left the process before it exits.
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { flushed } from "../../src/cli/main.js";

/** A stream that takes each write 20 ms later, as a pipe whose reader is slow. */
function slowStream(): { stream: Writable; out: string[] } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      setTimeout(() => {
        out.push(chunk.toString());
        callback();
      }, 20);
    },
  });
  return { stream, out };
}

describe("flushed", () => {
  it("resolves once what is buffered is written, below the buffer's limit (no 'drain' ever comes)", async () => {
    const { stream, out } = slowStream();
    expect(stream.write("line 1\n")).toBe(true);
    stream.write("line 2\n");
    expect(stream.writableLength).toBeGreaterThan(0);
    await flushed(stream);
    expect(out.join("")).toBe("line 1\nline 2\n");
  });

  it("resolves once a buffer over its limit is written", async () => {
    const { stream, out } = slowStream();
    const big = "x".repeat(20_000);
    expect(stream.write(big)).toBe(false);
    await flushed(stream);
    expect(out.join("")).toBe(big);
  });

  it("resolves at once when nothing is buffered", async () => {
    const { stream } = slowStream();
    await flushed(stream);
    expect(stream.writableLength).toBe(0);
  });
});
