// Real etcd servers for the fleet tests (Debian's etcd-server package; .ci/run installs it),
// each on free loopback ports with a fresh data directory, killed after the test.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterThisTest, tempDir, waitUntil } from "./helpers.js";

export const ETCD = process.env.ETCD ?? "/usr/bin/etcd";

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Member {
  name: string;
  client: string;
  child: ChildProcess;
  output: () => string;
  /** Start this member again (same data and ports) after it was killed. */
  restart(): Promise<void>;
}

export interface EtcdCluster {
  endpoints: string[];
  members: Member[];
}

async function healthy(member: Member): Promise<void> {
  await waitUntil(async () => {
    if (member.child.exitCode !== null) throw new Error(`etcd ${member.name} exited:\n${member.output()}`);
    const response = await fetch(`${member.client}/health`).catch(() => undefined);
    return response?.status === 200 && ((await response.json()) as { health: string }).health === "true";
  });
}

/** Start an etcd cluster of `size` members on loopback and wait until each answers /health. */
export async function startEtcd(size = 1): Promise<EtcdCluster> {
  const dir = await tempDir();
  const ports = await Promise.all(Array.from({ length: size }, async () => ({ client: await freePort(), peer: await freePort() })));
  const names = ports.map((_, i) => `m${i}`);
  const cluster = names.map((name, i) => `${name}=http://127.0.0.1:${ports[i]!.peer}`).join(",");
  const members = names.map((name, i) => {
    const { client, peer } = ports[i]!;
    const args = [
      `--name=${name}`,
      `--data-dir=${join(dir, name)}`,
      `--listen-client-urls=http://127.0.0.1:${client}`,
      `--advertise-client-urls=http://127.0.0.1:${client}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=${cluster}`,
      "--initial-cluster-state=new",
      "--initial-cluster-token=cdp-test",
      "--log-level=warn",
    ];
    let output = "";
    const launch = () => {
      const child = spawn(ETCD, args, { stdio: ["ignore", "pipe", "pipe"] });
      child.stdout!.on("data", (data: Buffer) => (output += data.toString()));
      child.stderr!.on("data", (data: Buffer) => (output += data.toString()));
      const exited = new Promise((resolve) => child.on("exit", resolve));
      afterThisTest(async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        await exited;
      });
      return child;
    };
    const member: Member = {
      name,
      client: `http://127.0.0.1:${client}`,
      child: launch(),
      output: () => output,
      async restart() {
        member.child = launch();
        await healthy(member);
      },
    };
    return member;
  });
  for (const member of members) await healthy(member);
  return { endpoints: members.map((member) => member.client), members };
}

/** The index of the cluster's current leader (asked of a member that is up). */
export async function leaderOf(cluster: EtcdCluster): Promise<number> {
  for (const member of cluster.members) {
    if (member.child.exitCode !== null || member.child.signalCode !== null) continue;
    const status = (await (await fetch(`${member.client}/v3/maintenance/status`, { method: "POST", body: "{}" })).json()) as { leader: string; header: { member_id: string } };
    const statuses = await Promise.all(
      cluster.members.map(async (other) => {
        if (other.child.exitCode !== null || other.child.signalCode !== null) return undefined;
        return ((await (await fetch(`${other.client}/v3/maintenance/status`, { method: "POST", body: "{}" })).json()) as { header: { member_id: string } }).header.member_id;
      }),
    );
    const index = statuses.indexOf(status.leader);
    if (index !== -1) return index;
  }
  throw new Error("no etcd leader found");
}

/** Compact etcd's history up to its current revision (what an operator's or etcd's auto-compaction does). */
export async function compactEtcd(cluster: EtcdCluster): Promise<number> {
  const client = cluster.members.find((member) => member.child.exitCode === null && member.child.signalCode === null)!.client;
  const range = (await (await fetch(`${client}/v3/kv/range`, { method: "POST", body: JSON.stringify({ key: Buffer.from("/").toString("base64") }) })).json()) as {
    header: { revision: string };
  };
  const response = await fetch(`${client}/v3/kv/compaction`, { method: "POST", body: JSON.stringify({ revision: range.header.revision, physical: true }) });
  if (response.status !== 200) throw new Error(`compaction failed: ${await response.text()}`);
  return Number(range.header.revision);
}
