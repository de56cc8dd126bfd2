// What the suite needs beyond Node, checked once before any test runs: etcd (fleet tests),
// Chromium (the dashboard), logrotate (the inbox under rotation), openssl (etcd's TLS test),
// promtool (the metrics' linter, from prometheus), supervisord (the example service file), nginx
// and curl (render targets and their health checks). They run as root, and missing Debian packages are
// installed here; as another user the suite stops at once, pointing at the unit tier — never a
// cascade of timeouts.
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
  if (process.getuid?.() !== 0) {
    // a cascade of EPERMs and timeouts otherwise: they mount file systems, set immutable flags,
    // lower the inotify limit and run cdp as other users
    throw new Error(
      "the system tests need root (they mount file systems, chattr files and switch users): run npm test as root in a VM or a container, as CI does.\nAs another user, npm run test:unit runs the unit tier: no root, no Debian package, no etcd.",
    );
  }
  const missing = NEEDED.filter(({ program }) => !existsSync(program)).map(({ pkg }) => pkg);
  if (missing.length === 0) return;
  const command = `apt-get update && apt-get install -y ${missing.join(" ")}`;
  if (!existsSync("/usr/bin/apt-get"))
    throw new Error(`the system tests need Debian packages that are not installed (and there is no apt-get here): ${missing.join(", ")}`);
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
