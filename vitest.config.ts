import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // two files at a time: most of the suite waits on child processes, etcd and the disk,
    // not on the CPU (on 2 cores the default would run one file at a time)
    maxWorkers: 2,
    projects: [
      {
        // pure modules and the pipeline's parts in-process: no root, no Debian package, no etcd; the
        // property tests (thousands of runs) take ~5 s alone, more beside the system tests
        test: { name: "unit", include: ["test/unit/**/*.test.ts"], testTimeout: 30_000 },
      },
      {
        test: {
          name: "system",
          include: ["test/*.test.ts"],
          // etcd, Chromium, logrotate …: installed from Debian when missing (as root), else a clear stop
          globalSetup: ["test/system.ts"],
          // end-to-end tests spawn real processes and wait on real file events; the longest (a rollout's
          // bake, a fleet migration) take up to ~20 s under the whole suite's load on two cores, and no
          // test may come within 2× of its timeout (one that fails by chance blocks every landing)
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
