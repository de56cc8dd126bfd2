// What the suite needs beyond Node, checked once before any test runs: etcd (fleet tests),
// Chromium (the dashboard), logrotate (the inbox under rotation), openssl (etcd's TLS test),
// promtool (the metrics' linter, from prometheus), supervisord (the example service file), nginx
// and curl (render targets and their health checks). As root, missing Debian packages are installed here;
// otherwise the suite stops at once, naming the one command to run — never a cascade of timeouts.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

/** A program the tests run, and the Debian package that brings it. */
const NEEDED = [
  { program: "/usr/bin/etcd", pkg: "etcd-server" },
  { program: "/usr/bin/chromium", pkg: "chromium" },
  { program: "/usr/sbin/logrotate", pkg: "logrotate" },
  { program: "/usr/bin/openssl", pkg: "openssl" },
  { program: "/usr/bin/prlimit", pkg: "util-linux" },
  { program: "/usr/bin/promtool", pkg: "prometheus" },
  { program: "/usr/bin/supervisord", pkg: "supervisor" },
  { program: "/usr/sbin/nginx", pkg: "nginx-light" },
  { program: "/usr/bin/curl", pkg: "curl" },
];

export default function setup(): void {
  const missing = NEEDED.filter(({ program }) => !existsSync(program)).map(({ pkg }) => pkg);
  if (missing.length === 0) return;
  const command = `apt-get update && apt-get install -y ${missing.join(" ")}`;
  if (process.getuid?.() !== 0 || !existsSync("/usr/bin/apt-get")) {
    throw new Error(
      `the test suite needs Debian packages that are not installed: ${missing.join(", ")}.\nRun as root: ${command}\n(or run npm test as root, which installs them)`,
    );
  }
  process.stderr.write(`test set-up: installing ${missing.join(", ")} from Debian (apt-get, as root)\n`);
  // RUNLEVEL=1: the packages' scripts do not start their services (nginx would take port 80)
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive", RUNLEVEL: "1" };
  execFileSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"], env });
  execFileSync("apt-get", ["install", "-y", "-qq", ...missing], { stdio: ["ignore", "ignore", "inherit"], env });
  // Debian's etcd and prometheus packages may start services on their default ports; the tests
  // start their own etcd and need only promtool
  for (const service of ["etcd", "prometheus", "prometheus-node-exporter", "supervisor", "nginx"]) {
    try {
      execFileSync("systemctl", ["disable", "--now", service], { stdio: "ignore" });
    } catch {
      // no systemd in a container: nothing was started
    }
  }
  try {
    execFileSync("/usr/sbin/nginx", ["-s", "quit"], { stdio: "ignore" }); // one Debian's scripts started after all
  } catch {
    // none runs: the tests start their own
  }
  const still = NEEDED.filter(({ program }) => !existsSync(program)).map(({ pkg }) => pkg);
  if (still.length > 0) throw new Error(`installing ${still.join(", ")} did not bring their programs: ${command}`);
}
