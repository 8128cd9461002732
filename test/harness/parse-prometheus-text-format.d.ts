// Types of parse-prometheus-text-format (a test dependency that ships none): families as prom2json prints them.
declare module 'parse-prometheus-text-format' {
  interface MetricFamily {
    name: string
    help: string
    type: 'GAUGE' | 'COUNTER' | 'SUMMARY' | 'HISTOGRAM' | 'UNTYPED'
    metrics: { value?: string; labels?: Record<string, string> }[]
  }
  export default function parsePrometheusTextFormat(text: string): MetricFamily[]
}
