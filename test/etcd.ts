// Real etcd servers for the fleet tests (Debian's etcd-server; test/system.ts installs it), killed after the test.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { startEtcdCluster, type EtcdCluster } from "../bench/etcd.js";
import { afterThisTest, type Running, startWatch, tempDir } from "./helpers.js";

export { compactEtcd, leaderOf } from "../bench/etcd.js";

/** An etcd cluster of `size` members on free loopback ports (`extra`: more of etcd's flags), stopped after the test. */
export async function startEtcd(size = 1, tls?: Certificates, extra: string[] = []): Promise<EtcdCluster> {
  const cluster = await startEtcdCluster(await tempDir(), size, tls && { ...tls.server, ca: tls.ca, client: tls.client }, extra);
  afterThisTest(() => cluster.stop());
  return cluster;
}

/** The `--cluster` address of a started cluster: all its members. */
export function clusterUrl(etcd: { endpoints: string[] }): string {
  return `etcd://${etcd.endpoints.map((url) => new URL(url).host).join(",")}`;
}

/** What makes `cdp watch` host `name` of the fleet under `prefix` on this cluster. */
export function fleetArgs(etcd: { endpoints: string[] }, prefix: string, name: string): string[] {
  return ["--cluster", clusterUrl(etcd), "--cluster-prefix", prefix, "--cluster-host", name];
}

/** Host `name` of a fleet: `cdp watch --cluster` on a fresh data directory (or `dir`), once it watches. */
export async function startFleetHost(
  etcd: { endpoints: string[] },
  name: string,
  { prefix = "/cdp/test", dir, extra = [] }: { prefix?: string; dir?: string; extra?: string[] } = {},
): Promise<{ name: string; dir: string; watch: Running }> {
  const data = dir ?? (await tempDir());
  return { name, dir: data, watch: await startWatch(data, [...fleetArgs(etcd, prefix, name), ...extra]) };
}

export interface Certificates {
  /** The CA's certificate (PEM file). */
  ca: string;
  server: { cert: string; key: string };
  client: { cert: string; key: string };
}

/** A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
export async function makeCertificates(): Promise<Certificates> {
  const dir = await tempDir();
  const at = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
  const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...key, "-days", "1", "-subj", "/CN=cdp-test-ca", "-keyout", at("ca.key"), "-out", at("ca.crt"));
  for (const [name, extension] of [
    ["server", "subjectAltName=IP:127.0.0.1"],
    ["client", "extendedKeyUsage=clientAuth"],
  ] as const) {
    writeFileSync(at(`${name}.ext`), `${extension}\n`);
    openssl("req", ...key, "-subj", `/CN=cdp-${name}`, "-keyout", at(`${name}.key`), "-out", at(`${name}.csr`));
    openssl(
      "x509",
      "-req",
      "-in",
      at(`${name}.csr`),
      "-CA",
      at("ca.crt"),
      "-CAkey",
      at("ca.key"),
      "-CAcreateserial",
      "-days",
      "1",
      "-out",
      at(`${name}.crt`),
      "-extfile",
      at(`${name}.ext`),
    );
  }
  return { ca: at("ca.crt"), server: { cert: at("server.crt"), key: at("server.key") }, client: { cert: at("client.crt"), key: at("client.key") } };
}
