// Prometheus text exposition read back in tests with a real parser (parse-prometheus-text-format), never a regex:
// the families, their types and the samples, with a check that no sample line was silently skipped.

import parsePrometheusTextFormat from 'parse-prometheus-text-format'

export interface Sample {
  readonly value: number
  readonly labels: Readonly<Record<string, string>>
}

export interface ParsedMetrics {
  /** Metric name → its TYPE ('GAUGE', 'COUNTER', …). */
  readonly types: ReadonlyMap<string, string>
  /** Every sample of a metric. */
  samples(name: string): Sample[]
  /** The value of the one sample of `name` whose labels include `labels`; undefined when there is none. */
  value(name: string, labels?: Record<string, string>): number | undefined
}

export function parseMetrics(text: string): ParsedMetrics {
  const families = parsePrometheusTextFormat(text)
  const bySample = new Map<string, Sample[]>()
  const types = new Map<string, string>()
  let count = 0
  for (const f of families) {
    types.set(f.name, f.type)
    const list = f.metrics.map((m) => ({ value: Number(m.value), labels: m.labels ?? {} }))
    count += list.length
    bySample.set(f.name, list)
  }
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')).length
  if (lines !== count) throw new Error(`the parser read ${count} samples from ${lines} sample lines`)
  const samples = (name: string) => bySample.get(name) ?? []
  return {
    types,
    samples,
    value(name, labels = {}) {
      const found = samples(name).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`)
      return found[0]?.value
    },
  }
}
