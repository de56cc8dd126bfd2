// Local etcd clusters on loopback for the fleet's benchmarks and tests: Debian's etcd-server
// (ETCD=path for another binary), each member on free ports with its own data directory.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import https from "node:https";
import { createServer } from "node:net";
import { join } from "node:path";

export const ETCD = process.env.ETCD ?? "/usr/bin/etcd";

/** A loopback port free at the time of asking (another process may take it before it is bound). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface EtcdMember {
  name: string;
  client: string;
  /** What a client needs to check the member's health over TLS. */
  tls?: { ca: Buffer; cert: Buffer; key: Buffer };
  child: ChildProcess;
  output: () => string;
  /** Start this member again (same data and ports) after it was killed. */
  restart(): Promise<void>;
}

export interface EtcdCluster {
  endpoints: string[];
  members: EtcdMember[];
  /** Kill every member and wait for them to exit. */
  stop(): Promise<void>;
}

const alive = (member: EtcdMember) => member.child.exitCode === null && member.child.signalCode === null;

/** TLS for the members' client URLs: PEM files of the server's certificate and key, and the CA that signs clients. */
export interface EtcdTls {
  cert: string;
  key: string;
  ca: string;
}

/** GET a member's /health; over TLS, trusting the test CA and presenting `client` when given. */
async function health(url: string, tls?: { ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<boolean> {
  if (!tls) {
    const response = await fetch(`${url}/health`).catch(() => undefined);
    return response?.status === 200 && ((await response.json()) as { health: string }).health === "true";
  }
  return new Promise((resolve) => {
    const request = https.get(`${url}/health`, { ca: tls.ca, cert: tls.cert, key: tls.key }, (res) => {
      let body = "";
      res.on("data", (chunk: Buffer) => (body += chunk.toString()));
      res.on("end", () => resolve(res.statusCode === 200 && body.includes('"health":"true"')));
    });
    request.on("error", () => resolve(false));
  });
}

async function healthy(member: EtcdMember, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!alive(member)) throw new Error(`etcd ${member.name} exited:\n${member.output()}`);
    if (await health(member.client, member.tls)) return;
    if (Date.now() > deadline) throw new Error(`etcd ${member.name} did not become healthy:\n${member.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Start an etcd cluster of `size` members on loopback, with data under `dir`; resolves once each
 * is healthy. With `tls`, clients connect over https and must present a certificate signed by its CA
 * (`client` is one, for the health checks).
 */
export async function startEtcdCluster(
  dir: string,
  size = 1,
  tls?: EtcdTls & { client: { cert: string; key: string } },
  extra: string[] = [],
): Promise<EtcdCluster> {
  // a free port may be taken by another process before etcd binds it (tests run side by side): new ports, then
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(join(dir, `start-${attempt}`), size, tls, extra);
    } catch (error) {
      if (attempt === 3 || !/address already in use/.test((error as Error).message)) throw error;
    }
  }
}

async function startOnce(
  dir: string,
  size: number,
  tls: (EtcdTls & { client: { cert: string; key: string } }) | undefined,
  extra: string[],
): Promise<EtcdCluster> {
  const scheme = tls ? "https" : "http";
  const tlsArgs = tls ? [`--cert-file=${tls.cert}`, `--key-file=${tls.key}`, `--trusted-ca-file=${tls.ca}`, "--client-cert-auth"] : [];
  const checkTls = tls && { ca: readFileSync(tls.ca), cert: readFileSync(tls.client.cert), key: readFileSync(tls.client.key) };
  const ports = await Promise.all(Array.from({ length: size }, async () => ({ client: await freePort(), peer: await freePort() })));
  const names = ports.map((_, i) => `m${i}`);
  const initial = names.map((name, i) => `${name}=http://127.0.0.1:${ports[i]!.peer}`).join(",");
  const exits: Promise<unknown>[] = [];
  const members = names.map((name, i) => {
    const { client, peer } = ports[i]!;
    const args = [
      `--name=${name}`,
      `--data-dir=${join(dir, name)}`,
      `--listen-client-urls=${scheme}://127.0.0.1:${client}`,
      `--advertise-client-urls=${scheme}://127.0.0.1:${client}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=${initial}`,
      "--initial-cluster-state=new",
      "--initial-cluster-token=cdp-local",
      "--log-level=warn",
      ...tlsArgs,
      ...extra,
    ];
    let output = "";
    const launch = () => {
      const child = spawn(ETCD, args, { stdio: ["ignore", "pipe", "pipe"] });
      child.stdout!.on("data", (data: Buffer) => (output += data.toString()));
      child.stderr!.on("data", (data: Buffer) => (output += data.toString()));
      exits.push(new Promise((resolve) => child.on("exit", resolve)));
      return child;
    };
    const member: EtcdMember = {
      name,
      client: `${scheme}://127.0.0.1:${client}`,
      tls: checkTls,
      child: launch(),
      output: () => output,
      async restart() {
        member.child = launch();
        await healthy(member);
      },
    };
    return member;
  });
  const cluster: EtcdCluster = {
    endpoints: members.map((member) => member.client),
    members,
    async stop() {
      for (const member of members) if (alive(member)) member.child.kill("SIGKILL");
      await Promise.all(exits);
    },
  };
  try {
    for (const member of members) await healthy(member);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** The index of the cluster's current leader, asked of the members that are up. */
export async function leaderOf(cluster: EtcdCluster): Promise<number> {
  const status = async (member: EtcdMember) =>
    (await (await fetch(`${member.client}/v3/maintenance/status`, { method: "POST", body: "{}" })).json()) as { leader: string; header: { member_id: string } };
  const statuses = await Promise.all(cluster.members.map((member) => (alive(member) ? status(member) : undefined)));
  const leader = statuses.find((s) => s !== undefined)?.leader;
  const index = statuses.findIndex((s) => s?.header.member_id === leader);
  if (index === -1) throw new Error("no etcd leader found");
  return index;
}

/** Compact etcd's history up to its current revision (what an operator's or etcd's auto-compaction does). */
export async function compactEtcd(cluster: EtcdCluster): Promise<number> {
  const client = cluster.members.find(alive)!.client;
  const range = (await (
    await fetch(`${client}/v3/kv/range`, { method: "POST", body: JSON.stringify({ key: Buffer.from("/").toString("base64") }) })
  ).json()) as {
    header: { revision: string };
  };
  const response = await fetch(`${client}/v3/kv/compaction`, { method: "POST", body: JSON.stringify({ revision: range.header.revision, physical: true }) });
  if (response.status !== 200) throw new Error(`compaction failed: ${await response.text()}`);
  return Number(range.header.revision);
}
