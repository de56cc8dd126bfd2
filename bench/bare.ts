// Bare etcd, the baseline of the fleet's benchmarks, through either client: etcd3 (gRPC), and
// cdp's own (src/fleet/etcd.ts, etcd's JSON gateway). cdp's hosts use the second; the figures
// are set against the faster, so that neither client's cost hides in the ratio.
import { Etcd3 } from "etcd3";
import { Etcd, prefixEnd } from "../src/fleet/etcd.js";
import type { FleetRecord } from "../src/fleet/log.js";

export interface BareClient {
  name: string;
  put(key: string, value: string): Promise<void>;
  /** Write `value` under `key` and move `head` from `after` on, only if it is still there. */
  commit(head: string, after: number, key: string, value: string, next: number): Promise<boolean>;
  /** Hear each value put under `key` (with `prefix`, under every key that starts with it). */
  watch(key: string, heard: (value: string) => void, prefix?: boolean): Promise<{ cancel(): Promise<void> }>;
  close(): void;
}

export function grpcClient(endpoint: string): BareClient {
  const client = new Etcd3({ hosts: endpoint });
  return {
    name: "gRPC (etcd3)",
    put: async (key, value) => void (await client.put(key).value(value)),
    async commit(head, after, key, value, next) {
      const check = after === 0 ? client.if(head, "Create", "==", 0) : client.if(head, "Value", "==", String(after));
      return (await check.then(client.put(head).value(String(next)), client.put(key).value(value)).commit()).succeeded;
    },
    async watch(key, heard, prefix = false) {
      const watcher = await (prefix ? client.watch().prefix(key) : client.watch().key(key)).create();
      watcher.on("put", (kv) => heard(kv.value!.toString()));
      return { cancel: () => watcher.cancel() };
    },
    close: () => client.close(),
  };
}

export function gatewayClient(endpoint: string): BareClient {
  const client = new Etcd({ endpoints: [endpoint] });
  return {
    name: "JSON gateway (cdp's)",
    put: (key, value) => client.put(key, value),
    async commit(head, after, key, value, next) {
      const check = after === 0 ? { key: head, absent: true as const } : { key: head, value: String(after) };
      return (
        await client.txn(
          [check],
          [
            { put: head, value: String(next) },
            { put: key, value },
          ],
        )
      ).succeeded;
    },
    async watch(key, heard, prefix = false) {
      const watch = await client.watch(key, prefix ? prefixEnd(key) : `${key}\0`, {
        put: (kv) => heard(kv.value),
        connected: () => undefined,
        error: () => undefined,
      });
      return { cancel: async () => watch.cancel() };
    },
    close: () => client.close(),
  };
}

/** Both clients, the baseline taken with each. */
export const bareClients = [grpcClient, gatewayClient];

/** Records as a host's burst makes them (`bench:n:<i>` lines read from one inbox file), numbered from `head + 1`. */
export function burstRecords(host: string, head: number, count: number, time: string): FleetRecord[] {
  const file = "2402252-1796528945720990075"; // an inbox file's identity
  return Array.from({ length: count }, (_, i) => ({
    revision: head + i + 1,
    line: `bench:n:${head + i}`,
    host,
    source: `cdp.new:${head + i + 1}`,
    time,
    seq: head + i + 1,
    position: { file, offset: 12 * (head + i + 1), line: head + i + 1 },
  }));
}
