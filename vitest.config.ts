import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // etcd, Chromium, logrotate …: installed from Debian when missing (as root), else a clear stop
    globalSetup: ["test/system.ts"],
    // end-to-end tests spawn real processes and wait on real file events; the longest (a rollout's
    // bake, a fleet migration) take up to ~20 s under the whole suite's load on two cores, and no
    // test may come within 2× of its timeout (one that fails by chance blocks every landing)
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // two files at a time: most of the suite waits on child processes, etcd and the disk,
    // not on the CPU (on 2 cores the default would run one file at a time)
    maxWorkers: 2,
  },
});
