#!/usr/bin/env -S node --max-semi-space-size=32
// Entry point of the `pgkeep` command: the compiled CLI lives in dist/ (built by `npm install` through `prepare`).
// The flag above: a backup or restore allocates a short-lived buffer per message, page and blob, and a larger
// young generation than V8's default 16 MB cuts garbage collection time by more than half (bench/backup.bench.ts).
import { main } from '../dist/src/cli/main.js'

process.exitCode = await main(process.argv.slice(2))
