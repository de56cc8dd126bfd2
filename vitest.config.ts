import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // end-to-end tests spawn real processes and wait on real file events
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
