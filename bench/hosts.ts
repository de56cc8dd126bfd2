// Fleet hosts for the benchmarks: `cdp watch --cluster` processes on a local etcd cluster.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { initDataDir } from "../src/store/datadir.js";

const CLI = fileURLToPath(new URL("../src/cli.js", import.meta.url));

/**
 * A `cdp watch --cluster` process, once it says it is watching. Its log goes to a file: a pipe
 * would wake the bench process (where changes are timed) at each of its lines.
 */
export async function watcher(dir: string, schemas: string, cluster: string[], name: string, prefix = "/cdp/bench"): Promise<ChildProcess> {
  await initDataDir(dir, schemas);
  const args = ["watch", "--dir", dir, "--schemas", schemas, "--cluster", `etcd://${cluster.map((url) => new URL(url).host).join(",")}`];
  const logFile = join(dir, "watch.log");
  const out = openSync(logFile, "a");
  const child = spawn(process.execPath, [CLI, ...args, "--cluster-prefix", prefix, "--cluster-host", name], { stdio: ["ignore", out, "inherit"] });
  closeSync(out);
  const output = () => (existsSync(logFile) ? readFileSync(logFile, "utf8") : "");
  while (!output().includes("cdp is watching")) {
    if (child.exitCode !== null) throw new Error(`cdp watch exited ${child.exitCode}: ${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return child;
}

/** Stop hosts and wait for them to exit. */
export async function stopAll(children: ChildProcess[]): Promise<void> {
  for (const child of children) child.kill("SIGTERM");
  await Promise.all(children.map((child) => new Promise((resolve) => (child.exitCode === null ? child.on("exit", resolve) : resolve(null)))));
}

/** A process's resident memory (MB): all of it, its private (anonymous) part, and its proportional share (PSS) of pages it shares with others. */
export function memoryOf(pid: number): { rss: number; anon: number; pss: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (text: string, name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN) / 1024;
  return { rss: kb(status, "VmRSS"), anon: kb(status, "RssAnon"), pss: kb(rollup, "Pss") };
}

/** CPU time (ms, user + system) a process has used so far, from /proc (10 ms ticks). */
export function cpuOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime: the 14th and 15th fields
}
