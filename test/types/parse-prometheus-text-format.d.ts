/** Types of parse-prometheus-text-format 1.x (it ships none): the JSON shape of prom2json. */
declare module 'parse-prometheus-text-format' {
  export interface PromSample {
    /** Counters, gauges and untyped samples. */
    value?: string;
    labels?: Record<string, string>;
    /** Histograms: cumulative count per upper bound (`le`, with `+Inf`). */
    buckets?: Record<string, string>;
    /** Summaries: value per quantile. */
    quantiles?: Record<string, string>;
    count?: string;
    sum?: string;
  }
  export interface PromFamily {
    name: string;
    help: string;
    type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
    metrics: PromSample[];
  }
  /** Parses the Prometheus text exposition format; throws on a malformed line. */
  export default function parsePrometheusTextFormat(text: string): PromFamily[];
}
