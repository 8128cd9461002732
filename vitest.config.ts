import { defineConfig } from 'vitest/config'

// Two projects: `unit` never touches the network; `integration` starts real PostgreSQL servers (14–19) and a
// local S3 server through test/harness/. `npm test` runs both; that is what CI runs.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          setupFiles: ['test/harness/poison-released.ts'],
          sequence: { groupOrder: 0 },
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Fetches (once, then cached) Debian's PostgreSQL 19 server and the 17–19 client tools.
          globalSetup: ['test/harness/global-setup.ts'],
          setupFiles: ['test/harness/poison-released.ts'],
          testTimeout: 300_000,
          hookTimeout: 120_000,
          // Each file starts its own servers; two cores, so two files at a time.
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
          pool: 'forks',
        },
      },
    ],
  },
})
