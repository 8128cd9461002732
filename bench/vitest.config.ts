import { defineConfig } from 'vitest/config'

// Benchmarks run through vitest only to reuse the TypeScript test harness (real servers); they assert nothing
// about time. `npm run bench:protocol` runs one; results go to the console and bench/results/.
export default defineConfig({
  test: {
    include: ['bench/**/*.bench.ts'],
    testTimeout: 3_600_000,
    hookTimeout: 600_000,
    fileParallelism: false,
    pool: 'forks',
  },
})
